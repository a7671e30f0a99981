//! Path normalisation, applied before routing. Defender's paths are matched
//! case-insensitively (`/API/Machines`), may pin a version (`/api/v1.0/...`),
//! and use OData call syntax (`GetLiveResponseResultDownloadLink(index=0)`).
//! This rewrites the fixed words of a path to the router's lower-case form
//! and leaves identifiers (machine ids, library file names) untouched.

use axum::extract::Request;
use axum::http::Uri;

const RESOURCES: &[&str] = &[
    "machines",
    "machineactions",
    "libraryfiles",
    "auditlog",
    "batches",
];
const ACTIONS: &[&str] = &[
    "runliveresponse",
    "cancel",
    "tags",
    "pause",
    "resume",
    "results",
    "machineactions",
    "output",
    "commands",
    "runantivirusscan",
    "isolate",
    "unisolate",
    "offboard",
    "stopandquarantinefile",
    "collectinvestigationpackage",
    "getpackageuri",
    "restrictcodeexecution",
    "unrestrictcodeexecution",
];
/// Words that stand where a machine id would (`/api/machines/findbytag`).
const MACHINE_COLLECTION_ACTIONS: &[&str] = &["findbytag", "addorremovetagformultiplemachines"];
const DOWNLOAD_LINK: &str = "getliveresponseresultdownloadlink";

fn is_version(segment: &str) -> bool {
    let rest = segment.strip_prefix(['v', 'V']).unwrap_or("");
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn canonical<'a>(segment: &str, words: &[&'a str]) -> Option<&'a str> {
    words
        .iter()
        .copied()
        .find(|w| w.eq_ignore_ascii_case(segment))
}

/// Rewrites a path; returns None when nothing changes.
pub fn normalise(path: &str) -> Option<String> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut segments: Vec<String> = trimmed.split('/').skip(1).map(String::from).collect();
    if segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("api"))
    {
        segments[0] = "api".into();
        if segments.get(1).is_some_and(|s| is_version(s)) {
            segments.remove(1);
        }
        if let Some(resource) = segments.get(1).and_then(|s| canonical(s, RESOURCES)) {
            segments[1] = resource.into();
        }
        if segments.len() == 3
            && segments[1] == "machines"
            && let Some(word) = canonical(&segments[2], MACHINE_COLLECTION_ACTIONS)
        {
            segments[2] = word.into();
        }
        if let Some(action) = segments.get(3).cloned() {
            if let Some(word) = canonical(&action, ACTIONS) {
                segments[3] = word.into();
            } else if let Some(args) = download_link_args(&action) {
                segments[3] = DOWNLOAD_LINK.into();
                segments.insert(4, args);
            }
        }
        // /api/machineactions/{id}/commands/{index}/output
        if segments.len() == 6
            && segments[3] == "commands"
            && segments[5].eq_ignore_ascii_case("output")
        {
            segments[5] = "output".into();
        }
    } else if segments
        .get(1)
        .is_some_and(|s| s.eq_ignore_ascii_case("oauth2"))
    {
        segments[1] = "oauth2".into();
        for segment in segments.iter_mut().skip(2) {
            if segment.eq_ignore_ascii_case("token") {
                *segment = "token".into();
            } else if segment.eq_ignore_ascii_case("v2.0") {
                *segment = "v2.0".into();
            }
        }
    }
    let rewritten = format!("/{}", segments.join("/"));
    (rewritten != path).then_some(rewritten)
}

/// `GetLiveResponseResultDownloadLink(index=0)` (any case, parentheses
/// possibly percent-encoded) → `index=0`, percent-encoded for a path segment.
fn download_link_args(segment: &str) -> Option<String> {
    let decoded = segment
        .replace("%28", "(")
        .replace("%29", ")")
        .replace("%3D", "=")
        .replace("%3d", "=");
    let lower = decoded.to_ascii_lowercase();
    let rest = lower.strip_prefix(DOWNLOAD_LINK)?;
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let encoded: String = inner
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '=' | '-' | '_' => c.to_string(),
            other => format!("%{:02X}", other as u32 & 0xff),
        })
        .collect();
    Some(if encoded.is_empty() {
        "%20".into()
    } else {
        encoded
    })
}

/// Rewrites a request's path before routing: case, API version prefix, OData call syntax.
pub fn normalise_request(mut request: Request) -> Request {
    if let Some(path) = normalise(request.uri().path()) {
        let new = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn fixed_words_are_case_insensitive_and_ids_are_kept() {
        assert_eq!(
            normalise("/API/Machines/AbC/RunLiveResponse").unwrap(),
            "/api/machines/AbC/runliveresponse"
        );
        assert_eq!(
            normalise("/api/v1.0/machineActions").unwrap(),
            "/api/machineactions"
        );
        assert_eq!(
            normalise("/api/LibraryFiles/Cancel.PS1").unwrap(),
            "/api/libraryfiles/Cancel.PS1"
        );
        assert_eq!(normalise("/api/machines/"), Some("/api/machines".into()));
        assert_eq!(normalise("/api/machines"), None);
        assert_eq!(
            normalise("/T1/OAuth2/V2.0/Token").unwrap(),
            "/T1/oauth2/v2.0/token"
        );
    }

    #[test]
    fn odata_call_syntax_becomes_a_segment() {
        assert_eq!(
            normalise("/api/machineactions/x/GetLiveResponseResultDownloadLink(index=2)").unwrap(),
            "/api/machineactions/x/getliveresponseresultdownloadlink/index=2"
        );
        assert_eq!(
            normalise("/api/machineactions/x/getLiveResponseResultDownloadLink%28index%3D0%29")
                .unwrap(),
            "/api/machineactions/x/getliveresponseresultdownloadlink/index=0"
        );
        assert_eq!(
            normalise("/api/machineactions/x/GetLiveResponseResultDownloadLink(index= 1)").unwrap(),
            "/api/machineactions/x/getliveresponseresultdownloadlink/index=%201"
        );
    }
}
