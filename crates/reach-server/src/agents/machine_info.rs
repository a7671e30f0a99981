//! What an agent reports about its device (`MachineInfo`, in its
//! enrollment and every Hello), checked before anything of it is stored:
//! bounded, printable fields and a bounded list of addresses. Never trusted
//! as an identity: the machine id the server chose is.

use reach_proto::agent::MachineInfo;

use crate::error::{ApiError, ApiResult};

/// Longest field of `MachineInfo` accepted.
const MAX_INFO_FIELD: usize = 256;
/// Most addresses a device may report.
const MAX_IP_ADDRESSES: usize = 64;

/// Refuses a report with a field too long, a control character or too many
/// addresses.
pub fn check_info(info: &MachineInfo) -> ApiResult<()> {
    for (name, value) in [
        ("hostname", &info.hostname),
        ("os_platform", &info.os_platform),
        ("os_version", &info.os_version),
        ("os_architecture", &info.os_architecture),
        ("agent_version", &info.agent_version),
    ] {
        if value.len() > MAX_INFO_FIELD || value.chars().any(char::is_control) {
            return Err(ApiError::InvalidInput(format!(
                "{name} must be at most {MAX_INFO_FIELD} printable characters"
            )));
        }
    }
    if info.hostname.is_empty() {
        return Err(ApiError::MissingParameter("hostname".into()));
    }
    if info.ip_addresses.len() > MAX_IP_ADDRESSES {
        return Err(ApiError::InvalidInput(format!(
            "at most {MAX_IP_ADDRESSES} ip_addresses are accepted"
        )));
    }
    for ip in &info.ip_addresses {
        let fields = [
            Some(&ip.ip_address),
            ip.mac_address.as_ref(),
            ip.interface.as_ref(),
        ];
        if fields
            .into_iter()
            .flatten()
            .any(|f| f.len() > 64 || f.chars().any(char::is_control))
        {
            return Err(ApiError::InvalidInput(
                "ip_addresses entries must be at most 64 printable characters".into(),
            ));
        }
    }
    Ok(())
}
