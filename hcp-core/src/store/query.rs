//! Filters and sort orders for VM lists, and the cursors that page through a sorted list.
//!
//! Every store uses these pure helpers, so a filter means the same thing and a cursor has the
//! same form whether the list comes from memory or from a database.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::{DesiredState, Error, MAX_TAGS, PowerState, Result, Vm, VmId};

/// Selects VMs. Every set field must match; an empty filter matches every VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Only VMs whose name starts with this text (byte-wise, case-sensitive).
    pub name_prefix: Option<String>,
    /// Only VMs that carry every one of these tags (key and value equal).
    pub tags: Vec<(String, String)>,
    /// Only VMs in this lifecycle state.
    pub state: Option<DesiredState>,
    /// Only VMs in this observed power state.
    pub power: Option<PowerState>,
}

impl VmFilter {
    /// Returns true when the filter selects every VM.
    pub fn is_empty(&self) -> bool {
        self.name_prefix.is_none()
            && self.tags.is_empty()
            && self.state.is_none()
            && self.power.is_none()
    }

    /// Returns true when `vm` passes every part of the filter.
    pub fn matches(&self, vm: &Vm) -> bool {
        self.name_prefix
            .as_deref()
            .is_none_or(|p| vm.spec.name.starts_with(p))
            && self
                .tags
                .iter()
                .all(|(k, v)| vm.spec.tags.get(k).is_some_and(|have| have == v))
            && self.state.is_none_or(|s| vm.desired == s)
            && self.power.is_none_or(|p| vm.power == p)
    }

    /// Returns true when two of the tags ask for one key with different values, so no VM can
    /// match.
    pub fn contradicts_itself(&self) -> bool {
        self.tags
            .iter()
            .enumerate()
            .any(|(i, (k, v))| self.tags[..i].iter().any(|(k2, v2)| k2 == k && v2 != v))
    }

    /// Checks the filter's bounds: at most [`MAX_TAGS`] tags, and no text longer than 255 bytes
    /// or holding control characters.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `name_prefix` or `tag`.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| s.len() > 255 || crate::model::has_control(s);
        if self.name_prefix.as_deref().is_some_and(bad) {
            return Err(Error::invalid(
                "name_prefix",
                "must be at most 255 bytes without control characters",
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Error::invalid(
                "tag",
                format!("at most {MAX_TAGS} tag filters are allowed"),
            ));
        }
        if self
            .tags
            .iter()
            .any(|(k, v)| k.is_empty() || bad(k) || bad(v))
        {
            return Err(Error::invalid(
                "tag",
                "must be `key=value` with a non-empty key; key and value at most 255 bytes \
                 without control characters",
            ));
        }
        Ok(())
    }
}

/// Parses one tag filter of the form `key=value` (the value may be empty or hold `=`).
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `tag` and the allowed form.
pub fn parse_tag_filter(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::invalid(
            "tag",
            format!(
                "`{}` is not of the form `key=value` (for example `tag=env=prod`)",
                crate::error::echo(text)
            ),
        )),
    }
}

/// Parses a lifecycle state as a filter value (`PENDING`, `ACTIVE`, `ERROR`, `DELETED`; any
/// case).
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `state` and listing the allowed values.
pub fn parse_state_filter(text: &str) -> Result<DesiredState> {
    const ALL: [DesiredState; 4] = [
        DesiredState::Pending,
        DesiredState::Active,
        DesiredState::Error,
        DesiredState::Deleted,
    ];
    ALL.into_iter()
        .find(|s| s.to_string().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            Error::invalid(
                "state",
                format!(
                    "unknown state `{}`; allowed: PENDING, ACTIVE, ERROR, DELETED",
                    crate::error::echo(text)
                ),
            )
        })
}

/// Parses a power state as a filter value (`RUNNING`, `STOPPED`, `PAUSED`, `UNKNOWN`; any case).
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `power` and listing the allowed values.
pub fn parse_power_filter(text: &str) -> Result<PowerState> {
    const ALL: [PowerState; 4] = [
        PowerState::Running,
        PowerState::Stopped,
        PowerState::Paused,
        PowerState::Unknown,
    ];
    ALL.into_iter()
        .find(|s| s.to_string().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            Error::invalid(
                "power",
                format!(
                    "unknown power state `{}`; allowed: RUNNING, STOPPED, PAUSED, UNKNOWN",
                    crate::error::echo(text)
                ),
            )
        })
}

/// What a VM list is ordered by; ties are always broken by VM id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum VmSortKey {
    /// By VM id, byte order (the order of [`crate::Store::list_vms`]).
    #[default]
    Id,
    /// By VM name, byte order.
    Name,
    /// By creation time, at microsecond precision.
    CreatedAt,
}

/// A VM list's order: a key and a direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VmSort {
    /// What to order by.
    pub key: VmSortKey,
    /// Largest first (the id tie-break is reversed too).
    pub descending: bool,
}

impl VmSort {
    /// The sort names accepted by [`VmSort::from_str`].
    pub const ALLOWED: &'static str = "name, -name, created_at, -created_at";

    /// Orders by `key`, smallest first.
    pub fn ascending(key: VmSortKey) -> Self {
        VmSort {
            key,
            descending: false,
        }
    }

    /// Orders by `key`, largest first.
    pub fn descending(key: VmSortKey) -> Self {
        VmSort {
            key,
            descending: true,
        }
    }

    /// Returns the position of `vm` in this order.
    pub fn position(&self, vm: &Vm) -> VmPosition {
        VmPosition {
            key: match self.key {
                VmSortKey::Id => SortValue::None,
                VmSortKey::Name => SortValue::Text(vm.spec.name.clone()),
                VmSortKey::CreatedAt => SortValue::Micros(vm.created_at.timestamp_micros()),
            },
            id: vm.id.clone(),
        }
    }

    /// Compares two positions in this order.
    pub fn compare(&self, a: &VmPosition, b: &VmPosition) -> Ordering {
        self.directed(a.key.borrowed(), &a.id, b.key.borrowed(), &b.id)
    }

    /// Compares two VMs in this order, as [`VmSort::compare`] compares their positions, without
    /// building the positions (no copy of a name).
    pub fn compare_vms(&self, a: &Vm, b: &Vm) -> Ordering {
        self.directed(self.key_of(a), &a.id, self.key_of(b), &b.id)
    }

    /// Returns true when `vm` comes after the position `pos` (a cursor's) in this order.
    pub fn follows(&self, vm: &Vm, pos: &VmPosition) -> bool {
        self.directed(self.key_of(vm), &vm.id, pos.key.borrowed(), &pos.id) == Ordering::Greater
    }

    /// The value `vm` is sorted by, borrowed from it.
    fn key_of<'a>(&self, vm: &'a Vm) -> SortKey<'a> {
        match self.key {
            VmSortKey::Id => SortKey::None,
            VmSortKey::Name => SortKey::Text(&vm.spec.name),
            VmSortKey::CreatedAt => SortKey::Micros(vm.created_at.timestamp_micros()),
        }
    }

    /// Orders (key, id) pairs: by key, then by id, reversed when descending.
    fn directed(&self, a: SortKey<'_>, a_id: &VmId, b: SortKey<'_>, b_id: &VmId) -> Ordering {
        let o = a.cmp(&b).then_with(|| a_id.cmp(b_id));
        if self.descending { o.reverse() } else { o }
    }

    /// Encodes `pos` as a cursor for this order.
    pub fn cursor(&self, pos: &VmPosition) -> String {
        match &pos.key {
            SortValue::None => pos.id.to_string(),
            SortValue::Text(name) => format!("n{}:{}{}", pos.id.as_str().len(), pos.id, name),
            SortValue::Micros(us) => format!("c{}:{}{}", pos.id.as_str().len(), pos.id, us),
        }
    }

    /// Decodes a cursor that [`VmSort::cursor`] made for this order.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `cursor` when it was not made for this order
    /// (for example a cursor of a `name` list passed with `sort=created_at`).
    pub fn parse_cursor(&self, cursor: &str) -> Result<VmPosition> {
        let bad = || {
            Error::invalid(
                "cursor",
                "is not a cursor of this list and sort order: pass the `next` of the previous \
                 page with the same `sort`",
            )
        };
        if self.key == VmSortKey::Id {
            return Ok(VmPosition {
                key: SortValue::None,
                id: VmId::new(cursor),
            });
        }
        let tag = match self.key {
            VmSortKey::Name => 'n',
            _ => 'c',
        };
        let rest = cursor.strip_prefix(tag).ok_or_else(bad)?;
        let (len, rest) = rest.split_once(':').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        if !rest.is_char_boundary(len.min(rest.len())) || rest.len() < len {
            return Err(bad());
        }
        let (id, key) = rest.split_at(len);
        let key = match self.key {
            VmSortKey::Name => SortValue::Text(key.to_string()),
            _ => SortValue::Micros(key.parse().map_err(|_| bad())?),
        };
        Ok(VmPosition {
            key,
            id: VmId::new(id),
        })
    }
}

impl FromStr for VmSort {
    type Err = Error;

    /// Parses `name`, `-name`, `created_at` or `-created_at` (a leading `-`: largest first).
    fn from_str(s: &str) -> Result<Self> {
        let (descending, key) = match s.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, s),
        };
        let key = match key {
            "name" => VmSortKey::Name,
            "created_at" => VmSortKey::CreatedAt,
            _ => {
                return Err(Error::invalid(
                    "sort",
                    format!(
                        "unknown sort `{}`; allowed: {}",
                        crate::error::echo(s),
                        VmSort::ALLOWED
                    ),
                ));
            }
        };
        Ok(VmSort { key, descending })
    }
}

impl fmt::Display for VmSort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.key {
            VmSortKey::Id => "id",
            VmSortKey::Name => "name",
            VmSortKey::CreatedAt => "created_at",
        };
        if self.descending {
            write!(f, "-{key}")
        } else {
            f.write_str(key)
        }
    }
}

/// The value a VM is sorted by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SortValue {
    /// Sorted by id alone.
    None,
    /// A name.
    Text(String),
    /// A creation time in microseconds since the Unix epoch.
    Micros(i64),
}

impl SortValue {
    /// Borrows the value.
    fn borrowed(&self) -> SortKey<'_> {
        match self {
            SortValue::None => SortKey::None,
            SortValue::Text(t) => SortKey::Text(t),
            SortValue::Micros(us) => SortKey::Micros(*us),
        }
    }
}

/// A [`SortValue`] borrowed from a VM or a position; ordered as `SortValue` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    None,
    Text(&'a str),
    Micros(i64),
}

/// Where a VM stands in a sorted list: its sort value, then its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmPosition {
    /// The sort value.
    pub key: SortValue,
    /// The VM id (the tie-break).
    pub id: VmId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_for_every_sort() {
        for sort in [
            VmSort::default(),
            VmSort::ascending(VmSortKey::Name),
            VmSort::descending(VmSortKey::Name),
            VmSort::ascending(VmSortKey::CreatedAt),
            VmSort::descending(VmSortKey::CreatedAt),
        ] {
            let pos = VmPosition {
                key: match sort.key {
                    VmSortKey::Id => SortValue::None,
                    VmSortKey::Name => SortValue::Text("web:1-ä".into()),
                    VmSortKey::CreatedAt => SortValue::Micros(-5),
                },
                id: VmId::new("vm-12:3"),
            };
            assert_eq!(
                sort.parse_cursor(&sort.cursor(&pos)).unwrap(),
                pos,
                "{sort}"
            );
        }
    }

    #[test]
    fn vms_compare_as_their_positions_do() {
        let base = chrono::Utc::now();
        // Equal names and equal times, so the id decides too.
        let vms: Vec<Vm> = [
            ("b", "vm-2", 0),
            ("a", "vm-3", 5),
            ("b", "vm-1", 5),
            ("ab", "vm-4", -1),
        ]
        .into_iter()
        .map(|(name, id, secs)| {
            let mut vm = crate::testkit::store::vm("p", name);
            vm.id = VmId::new(id);
            vm.created_at = base + chrono::Duration::seconds(secs);
            vm
        })
        .collect();
        for sort in [
            VmSort::default(),
            VmSort::descending(VmSortKey::Id),
            VmSort::ascending(VmSortKey::Name),
            VmSort::descending(VmSortKey::Name),
            VmSort::ascending(VmSortKey::CreatedAt),
            VmSort::descending(VmSortKey::CreatedAt),
        ] {
            for a in &vms {
                for b in &vms {
                    let (pa, pb) = (sort.position(a), sort.position(b));
                    assert_eq!(sort.compare_vms(a, b), sort.compare(&pa, &pb), "{sort}");
                    assert_eq!(
                        sort.follows(a, &pb),
                        sort.compare(&pa, &pb) == Ordering::Greater,
                        "{sort}"
                    );
                }
            }
        }
    }

    #[test]
    fn foreign_or_broken_cursors_name_the_cursor() {
        let name = VmSort::ascending(VmSortKey::Name);
        let created = VmSort::ascending(VmSortKey::CreatedAt);
        let c = name.cursor(&VmPosition {
            key: SortValue::Text("a".into()),
            id: VmId::new("vm-1"),
        });
        let e = created.parse_cursor(&c).unwrap_err();
        assert_eq!(e.field(), Some("cursor"));
        for broken in ["n", "n9:ab", "nx:ab", "c2:abzz", "n1:ä"] {
            assert!(name.parse_cursor(broken).is_err() || created.parse_cursor(broken).is_err());
        }
        assert!(name.parse_cursor("n9:ab").is_err());
        assert!(created.parse_cursor("c2:abzz").is_err());
    }

    #[test]
    fn sort_names_parse_and_unknown_ones_list_the_allowed() {
        assert_eq!(
            "-created_at".parse::<VmSort>().unwrap(),
            VmSort::descending(VmSortKey::CreatedAt)
        );
        assert_eq!("name".parse::<VmSort>().unwrap().to_string(), "name");
        let e = "size".parse::<VmSort>().unwrap_err();
        assert_eq!(e.field(), Some("sort"));
        assert!(e.to_string().contains("-created_at"), "{e}");
    }

    #[test]
    fn filter_values_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_tag_filter("env=a=b").unwrap(),
            ("env".into(), "a=b".into())
        );
        for bad in ["env", "=x", ""] {
            let e = parse_tag_filter(bad).unwrap_err();
            assert_eq!(e.field(), Some("tag"));
            assert!(e.to_string().contains("key=value"), "{e}");
        }
        assert_eq!(parse_state_filter("active").unwrap(), DesiredState::Active);
        let e = parse_state_filter("on").unwrap_err();
        assert_eq!(e.field(), Some("state"));
        assert!(e.to_string().contains("PENDING, ACTIVE"), "{e}");
        assert_eq!(parse_power_filter("Running").unwrap(), PowerState::Running);
        let e = parse_power_filter("on").unwrap_err();
        assert_eq!(e.field(), Some("power"));
        assert!(e.to_string().contains("RUNNING, STOPPED"), "{e}");
    }

    #[test]
    fn contradicting_tags_are_noticed() {
        let mut f = VmFilter {
            tags: vec![("a".into(), "1".into()), ("a".into(), "1".into())],
            ..VmFilter::default()
        };
        assert!(!f.contradicts_itself());
        f.tags.push(("a".into(), "2".into()));
        assert!(f.contradicts_itself());
    }
}
