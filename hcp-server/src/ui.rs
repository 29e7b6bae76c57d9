//! The web UI at `/ui/`: plain HTML, ES modules and CSS (no front-end build step), embedded in
//! the binary by `build.rs`, served with a strict Content-Security-Policy.
//!
//! # Behavior
//! - `GET /ui` redirects to `/ui/`, which answers `index.html`; `/ui/<path>` answers the embedded
//!   file, or `404`. Only `GET` and `HEAD`.
//! - The files are public: they hold no data. Everything the UI shows comes from the APIs, with
//!   the browser login's session cookie (and its CSRF token in `X-CSRF-Token` on changes).
//! - Every answer carries a Content-Security-Policy that allows scripts, styles, images and
//!   connections from this origin only (no inline script, no third-party origin), forbids framing,
//!   and `X-Content-Type-Options: nosniff`.

use poem::http::{Method, StatusCode, header};
use poem::{Request, Response};

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The UI's Content-Security-Policy.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Returns the embedded file at `path` (relative to `/ui/`).
pub(crate) fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

/// The content type of a UI file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("md") | Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Answers a request under `/ui`.
pub(crate) fn serve(req: &Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return secured(
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, HEAD")
                .finish(),
        );
    }
    let path = req.uri().path();
    if path == "/ui" {
        return secured(
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, "ui/")
                .finish(),
        );
    }
    let rel = path.strip_prefix("/ui/").unwrap_or_default();
    let rel = if rel.is_empty() { "index.html" } else { rel };
    match asset(rel) {
        Some(bytes) => secured(
            Response::builder()
                .content_type(content_type(rel))
                // The files change with the binary: revalidate rather than serve a stale UI.
                .header(header::CACHE_CONTROL, "no-cache")
                .body(bytes),
        ),
        None => secured(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .content_type("text/plain; charset=utf-8")
                .body("not found: no such file of the web UI"),
        ),
    }
}

/// Adds the UI's security headers.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response {
        serve(&Request::builder().uri(path.parse().unwrap()).finish())
    }

    #[test]
    fn the_page_and_its_modules_are_served_with_the_policy() {
        let r = get("/ui/");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(asset("app.js").is_some());
        assert!(asset("vendor/novnc/core/rfb.js").is_some());
        assert!(asset("vendor/novnc/LICENSE.txt").is_some());
        let r = get("/ui/app.js");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert_eq!(get("/ui/nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/ui/../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let r = get("/ui");
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::LOCATION], "ui/");
    }

    #[test]
    fn no_page_has_inline_script_or_a_foreign_origin() {
        for (path, bytes) in ASSETS.iter().filter(|(p, _)| !p.starts_with("vendor/")) {
            let text = String::from_utf8_lossy(bytes);
            if path.ends_with(".html") {
                // Every <script> has a src; no inline handlers.
                for tag in text.split("<script").skip(1) {
                    let open = tag.split('>').next().unwrap_or_default();
                    assert!(open.contains("src="), "{path}: inline <script{open}>");
                }
                assert!(!text.contains(" onclick="), "{path}: inline handler");
                assert!(!text.contains(" style="), "{path}: inline style");
            }
            for foreign in ["http://", "https://", "//cdn"] {
                assert!(
                    !text.contains(foreign),
                    "{path} names a foreign origin ({foreign})"
                );
            }
        }
    }
}
