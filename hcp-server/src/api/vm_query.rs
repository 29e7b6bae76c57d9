//! The filter and sort query parameters of the VM lists (tenant and ops), parsed into the
//! store's [`VmFilter`] and [`VmSort`] with errors that name the parameter.

use hcp_core::Result;
use hcp_core::store::{VmFilter, VmSort, parse_power_filter, parse_state_filter, parse_tag_filter};

/// Builds the filter and order of a VM list from its query parameters; empty values count as
/// absent.
///
/// # Errors
/// `InvalidSpec` naming `tag` (not `key=value`), `state` or `power` (an unknown value, listing
/// the allowed ones), `sort` (listing the allowed orders) or `name_prefix` (too long).
pub(crate) fn vm_query(
    name_prefix: Option<String>,
    tags: Vec<String>,
    state: Option<String>,
    power: Option<String>,
    sort: Option<String>,
) -> Result<(VmFilter, VmSort)> {
    let filter = VmFilter {
        name_prefix: name_prefix.filter(|p| !p.is_empty()),
        tags: tags
            .iter()
            .map(|t| parse_tag_filter(t))
            .collect::<Result<_>>()?,
        state: state
            .filter(|s| !s.is_empty())
            .map(|s| parse_state_filter(&s))
            .transpose()?,
        power: power
            .filter(|p| !p.is_empty())
            .map(|p| parse_power_filter(&p))
            .transpose()?,
    };
    filter.validate()?;
    let sort = match sort.filter(|s| !s.is_empty()) {
        Some(s) => s.parse()?,
        None => VmSort::default(),
    };
    Ok((filter, sort))
}
