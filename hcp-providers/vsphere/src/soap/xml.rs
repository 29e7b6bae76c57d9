//! A small XML tree for vim25 replies and a writer for vim25 requests.
//!
//! Replies are parsed with namespaces resolved: an element keeps its local name, and its
//! `xsi:type` is found by the attribute's namespace (`http://www.w3.org/2001/XMLSchema-instance`),
//! whatever prefix the server chose (vCenter writes `xsi:type`, govmomi's simulator
//! `XMLSchema-instance:type`). The unqualified `type` attribute of a managed object reference
//! (`<obj type="VirtualMachine">vm-42</obj>`) is kept apart from it.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// The XML Schema instance namespace, where `type` names an element's concrete type.
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Most elements nested in one another that a reply may hold. A VM's snapshot tree nests one
/// level per snapshot of a chain, so this leaves room for chains far past the 32 snapshots
/// vSphere supports, while still bounding what a reply can make HCP hold.
const MAX_DEPTH: usize = 320;

/// One element of a reply: its local name, types, text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// The local name (`returnval`, `propSet`).
    pub name: String,
    /// The `xsi:type`, without its prefix (`TaskInfo`, `ArrayOfOptionValue`).
    pub xsi_type: Option<String>,
    /// The unqualified `type` attribute (a managed object reference's type).
    pub mo_type: Option<String>,
    /// The element's own text, unescaped and trimmed.
    pub text: String,
    /// The child elements, in order.
    pub children: Vec<Node>,
}

impl Node {
    /// Returns the first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Returns every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, p| n.child(p))
    }

    /// Returns the text of the child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Returns the concrete type: `xsi:type` when given, else the element name.
    pub fn kind(&self) -> &str {
        self.xsi_type.as_deref().unwrap_or(&self.name)
    }
}

/// Parses a whole document into its root element.
///
/// # Errors
/// A message saying why the document is not well-formed XML.
pub fn parse(doc: &[u8]) -> Result<Node, String> {
    let mut reader = NsReader::from_reader(doc);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let (_, local) = reader.resolve_element(e.name());
                let mut node = Node {
                    name: String::from_utf8_lossy(local.as_ref()).into_owned(),
                    ..Node::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| format!("malformed XML attribute: {e}"))?;
                    let (ns, local) = reader.resolve_attribute(attr.key);
                    if local.as_ref() != b"type" {
                        continue;
                    }
                    let value = attr
                        .unescape_value()
                        .map_err(|e| format!("malformed XML attribute: {e}"))?
                        .into_owned();
                    match ns {
                        ResolveResult::Bound(n) if n.as_ref() == XSI.as_bytes() => {
                            // A QName: the part after the prefix names the vim25 type.
                            let t = value.rsplit(':').next().unwrap_or(&value).to_string();
                            node.xsi_type = Some(t);
                        }
                        ResolveResult::Unbound => node.mo_type = Some(value),
                        _ => {}
                    }
                }
                if empty {
                    stack
                        .last_mut()
                        .ok_or("unbalanced XML")?
                        .children
                        .push(node);
                } else {
                    if stack.len() > MAX_DEPTH {
                        return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
                    }
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced XML")?
                    .children
                    .push(node);
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| format!("malformed XML text: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(text.trim());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let mut root = stack.pop().ok_or("unbalanced XML")?;
    if !stack.is_empty() {
        return Err("the XML document ends inside an element".into());
    }
    root.children
        .pop()
        .ok_or_else(|| "an empty XML document".into())
}

/// Writes a vim25 request body, escaping every text.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// Starts an empty body.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Opens element `name`.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Opens element `name` of concrete vim25 type `xsi_type`.
    pub fn open_typed(&mut self, name: &str, xsi_type: &str) -> &mut Self {
        self.out
            .push_str(&format!("<{name} xsi:type=\"{}\">", escape(xsi_type)));
        self
    }

    /// Closes element `name`.
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Writes `<name>text</name>`.
    pub fn el(&mut self, name: &str, text: impl std::fmt::Display) -> &mut Self {
        let text = text.to_string();
        self.out
            .push_str(&format!("<{name}>{}</{name}>", escape(&text)));
        self
    }

    /// Writes `<name xsi:type="t">text</name>` (an `anyType` value).
    pub fn typed_el(&mut self, name: &str, xsi_type: &str, text: &str) -> &mut Self {
        self.out.push_str(&format!(
            "<{name} xsi:type=\"{}\">{}</{name}>",
            escape(xsi_type),
            escape(text)
        ));
        self
    }

    /// Writes a managed object reference `<name type="T">value</name>`.
    pub fn moref(&mut self, name: &str, r: &super::MoRef) -> &mut Self {
        self.out.push_str(&format!(
            "<{name} type=\"{}\">{}</{name}>",
            escape(&r.kind),
            escape(&r.value)
        ));
        self
    }

    /// Writes a parsed element back, types and references kept (to echo a device in an edit).
    pub fn node(&mut self, n: &Node) -> &mut Self {
        self.node_as(&n.name, n)
    }

    /// Writes a parsed element back under another name (`VirtualDevice` as read → `device`).
    pub fn node_as(&mut self, name: &str, n: &Node) -> &mut Self {
        let mut open = name.to_string();
        if let Some(t) = &n.xsi_type {
            open.push_str(&format!(" xsi:type=\"{}\"", escape(t)));
        }
        if let Some(t) = &n.mo_type {
            open.push_str(&format!(" type=\"{}\"", escape(t)));
        }
        self.out.push_str(&format!("<{open}>"));
        if n.children.is_empty() {
            self.out.push_str(&escape(&n.text));
        }
        for c in &n.children {
            self.node(c);
        }
        self.close(name)
    }

    /// Returns the body written so far.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsi_type_resolves_by_namespace_not_prefix() {
        for doc in [
            r#"<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><val xsi:type="xsd:string">a</val></r>"#,
            r#"<r xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"><val XMLSchema-instance:type="string">a</val></r>"#,
        ] {
            let n = parse(doc.as_bytes()).unwrap();
            let v = n.child("val").unwrap();
            assert_eq!(v.xsi_type.as_deref(), Some("string"), "{doc}");
            assert_eq!(v.text, "a");
        }
        // A `type` in another namespace is neither.
        let n =
            parse(br#"<r xmlns:o="urn:other"><v o:type="X" type="VirtualMachine">vm-1</v></r>"#)
                .unwrap();
        let v = n.child("v").unwrap();
        assert_eq!(v.xsi_type, None);
        assert_eq!(v.mo_type.as_deref(), Some("VirtualMachine"));
    }

    #[test]
    fn text_is_unescaped_and_bad_xml_refused() {
        let n = parse(b"<a><b>x &amp; y</b><c/></a>").unwrap();
        assert_eq!(n.text_of("b"), Some("x & y"));
        assert!(n.child("c").is_some());
        assert!(parse(b"<a><b></a>").is_err());
        let deep = "<a>".repeat(MAX_DEPTH + 10) + &"</a>".repeat(MAX_DEPTH + 10);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn the_writer_escapes() {
        let mut w = Writer::new();
        w.el("name", "a<b&c");
        assert_eq!(w.finish(), "<name>a&lt;b&amp;c</name>");
        let doc = r#"<device xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><datastore type="Datastore">datastore-1</datastore></backing></device>"#;
        let n = parse(doc.as_bytes()).unwrap();
        w.node(&n);
        let again = format!("<r xmlns:xsi=\"{XSI}\">{}</r>", w.finish());
        assert_eq!(parse(again.as_bytes()).unwrap().children[0], n);
    }
}
