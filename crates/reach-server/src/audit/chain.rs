//! Checking and exporting the chain: `verify` walks every entry, oldest
//! first, a page at a time, and names the first one that was altered,
//! removed or inserted (a pruned beginning is accounted for by the entry
//! that pruned it); `export` writes entries as JSON lines. Neither changes
//! anything.

use serde_json::Value;

use crate::store::AuditLog;
use crate::store::audit::{GENESIS, link_hash};
use crate::time::Micros;

use super::{Operation, to_wire};

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry links to the one before it. `head` is the last entry's
    /// number and hash (compare it with a copy kept elsewhere: removing the
    /// newest entries leaves an intact, shorter chain).
    Intact {
        /// How many entries there are.
        entries: u64,
        /// The oldest entry's number (after pruning, more than 1).
        first: i64,
        /// The newest entry's number and hash; None for an empty trail.
        head: Option<(i64, String)>,
    },
    /// The first entry that does not fit, and why.
    Broken {
        /// Its number.
        seq: i64,
        /// What does not fit.
        reason: String,
    },
}

/// Walks the whole chain, oldest first, a page at a time.
pub async fn verify(store: &dyn AuditLog) -> anyhow::Result<Verdict> {
    const PAGE: u32 = 5_000;
    let mut entries = 0u64;
    let mut first = 0i64;
    let mut last: Option<(i64, String)> = None;
    loop {
        let after = last.as_ref().map_or(0, |(seq, _)| *seq);
        let page = store.audit_page(after, Micros(i64::MIN), PAGE).await?;
        if page.is_empty() {
            break;
        }
        for entry in page {
            let expected_prev = match &last {
                Some((seq, hash)) => {
                    if entry.seq != seq + 1 {
                        return Ok(Verdict::Broken {
                            seq: seq + 1,
                            reason: format!("entries {} to {} are missing", seq + 1, entry.seq - 1),
                        });
                    }
                    hash.clone()
                }
                None => {
                    first = entry.seq;
                    if entry.seq == 1 {
                        GENESIS.to_string()
                    } else {
                        // Entries before it were pruned; the prune entry says
                        // which hash the first kept entry must follow.
                        match pruned_through(store, entry.seq - 1).await? {
                            Some(hash) => hash,
                            None => {
                                return Ok(Verdict::Broken {
                                    seq: 1,
                                    reason: format!(
                                        "entries 1 to {} are missing and no pruning entry accounts for them",
                                        entry.seq - 1
                                    ),
                                });
                            }
                        }
                    }
                }
            };
            if entry.prev_hash != expected_prev {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its previous-hash does not match the entry before it".into(),
                });
            }
            if link_hash(entry.seq, &entry.event, &entry.prev_hash) != entry.hash {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its contents do not match its hash (altered)".into(),
                });
            }
            entries += 1;
            last = Some((entry.seq, entry.hash));
        }
    }
    Ok(Verdict::Intact {
        entries,
        first,
        head: last,
    })
}

/// Writes entries at or after `since` (of one tenant, or all) as JSON
/// lines, oldest first, a page at a time.
pub async fn export(
    store: &dyn AuditLog,
    since: Micros,
    tenant_id: Option<&str>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = store.audit_page(after, since, 5_000).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for entry in page {
            if tenant_id.is_some_and(|t| t != entry.event.tenant_id) {
                continue;
            }
            serde_json::to_writer(&mut *out, &to_wire(entry))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}

/// The hash of entry `through` as recorded by the pruning entry that
/// removed it, if there is one.
async fn pruned_through(store: &dyn AuditLog, through: i64) -> anyhow::Result<Option<String>> {
    let mut after = through;
    loop {
        let page = store.audit_page(after, Micros(i64::MIN), 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = last.seq;
        for entry in page {
            if entry.event.operation != Operation::AuditPruned.as_str() {
                continue;
            }
            let details: Value = serde_json::from_str(&entry.event.details).unwrap_or_default();
            if details["throughId"].as_i64() == Some(through)
                && let Some(hash) = details["throughHash"].as_str()
            {
                return Ok(Some(hash.to_string()));
            }
        }
    }
}
