//! The investigation package: a built-in, versioned collector (`COLLECTOR`)
//! that gathers what Defender's Linux package holds, in its folders
//! (processes; network connections, listening ports, ARP, routes, firewall
//! rules; system information and disk volumes; open files; users, groups,
//! sign-in history and sudoers; scheduled tasks, services and kernel
//! modules; shell histories; a listing of the temp folders; installed
//! packages), into one zip with `CollectionSummaryReport.csv` (one row per
//! data point: its command, status and error) and `manifest.json` (the
//! collector, the machine, when, and each other file's size and SHA-256).
//!
//! Every data point is bounded (`Bounds`: time for a command, bytes for
//! what it keeps) and a failing one never fails the package: its row says
//! why. This module only reads the device; it never changes it, and runs
//! every command directly (never through a shell).

mod gather;
mod points;
pub mod zip;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use gather::gather;
use points::LINUX;

/// The Linux collector's name and version, recorded in the manifest.
pub const COLLECTOR: &str = "reach-linux-1";
/// The macOS collector's (not run by any test here: no macOS machine).
pub const COLLECTOR_MACOS: &str = "reach-macos-1";

/// This platform's collector: its name and data points.
fn collector() -> (&'static str, &'static [points::DataPoint]) {
    if cfg!(target_os = "macos") {
        (COLLECTOR_MACOS, points::MACOS)
    } else {
        (COLLECTOR, LINUX)
    }
}

/// How much one data point may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// A command is killed after this long (what it wrote is kept).
    pub command_time: Duration,
    /// Bytes kept of one data point's output (the rest is cut, and said so).
    pub point_bytes: usize,
    /// Entries listed of the temp folders.
    pub listing_entries: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            command_time: Duration::from_secs(30),
            point_bytes: 16 * 1024 * 1024,
            listing_entries: 20_000,
        }
    }
}

/// A package written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Where the zip is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the zip.
    pub sha256: String,
}

/// Collects the package of `machine_id` into `dir/package.zip`.
pub async fn collect(machine_id: &str, dir: &Path, bounds: Bounds) -> anyhow::Result<Package> {
    let collected_at = utc_now();
    let mut rows = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (name, points) = collector();
    for point in points {
        let gathered = gather(point, bounds).await;
        rows.push(vec![
            point.path.to_string(),
            gathered.command.clone(),
            match (&gathered.error, gathered.files.is_empty()) {
                (None, _) => "Succeeded".to_string(),
                (Some(_), false) => "Partial".to_string(),
                (Some(_), true) => "Failed".to_string(),
            },
            gathered.error.clone().unwrap_or_default(),
        ]);
        files.extend(gathered.files);
    }
    let mut summary = String::from("Data point,Command,Status,Error\r\n");
    for row in &rows {
        let cells: Vec<String> = row.iter().map(|cell| csv(cell)).collect();
        summary.push_str(&cells.join(","));
        summary.push_str("\r\n");
    }
    files.push(("CollectionSummaryReport.csv".into(), summary.into_bytes()));
    let listed: Vec<serde_json::Value> = files
        .iter()
        .map(|(path, bytes)| {
            json!({ "path": path, "size": bytes.len(), "sha256": hex::encode(Sha256::digest(bytes)) })
        })
        .collect();
    let manifest = json!({
        "collector": name,
        "machineId": machine_id,
        "collectedAt": collected_at,
        "files": listed,
    });
    let path = dir.join("package.zip");
    let out = std::fs::File::create(&path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(out));
    zip.add("manifest.json", &serde_json::to_vec_pretty(&manifest)?)?;
    for (name, bytes) in &files {
        zip.add(name, bytes)?;
    }
    zip.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let sha256 = sha256_of(&path)?;
    let size = std::fs::metadata(&path)?.len();
    Ok(Package { path, size, sha256 })
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A CSV cell: quoted when it holds a comma, quote or line break.
fn csv(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// Now as `2026-12-02T08:11:21Z`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// What CPython prints running `program` on the archive at `path` (its
/// zip reader checks what ours wrote); None, saying so, without python3.
#[cfg(test)]
fn python_reads(program: &str, path: &Path) -> Option<String> {
    let Ok(output) = std::process::Command::new("python3")
        .args(["-c", program])
        .arg(path)
        .output()
    else {
        println!("skipped: needs python3");
        return None;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package collected on the machine running the test (it only reads)
    /// checked by CPython's zip reader: the manifest covers every other
    /// file with its size and SHA-256, and the summary has a row per data
    /// point.
    #[tokio::test]
    async fn the_package_holds_its_manifest_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let package = collect("m1", dir.path(), Bounds::default()).await.unwrap();
        assert_eq!(
            package.size,
            std::fs::metadata(&package.path).unwrap().len()
        );
        assert_eq!(package.sha256, sha256_of(&package.path).unwrap());
        let check = "import zipfile,json,hashlib,sys,csv,io\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nm=json.loads(z.read('manifest.json'))\nnames=set(z.namelist())-{'manifest.json'}\nassert {f['path'] for f in m['files']}==names, names\nfor f in m['files']:\n  b=z.read(f['path'])\n  assert len(b)==f['size'] and hashlib.sha256(b).hexdigest()==f['sha256'], f\nrows=list(csv.reader(io.StringIO(z.read('CollectionSummaryReport.csv').decode())))\nassert rows[0]==['Data point','Command','Status','Error'], rows[0]\nprint(m['collector'], m['machineId'], len(rows)-1, 'Processes/processes.txt' in names, m['collectedAt'][:2])";
        let Some(said) = python_reads(check, &package.path) else {
            return;
        };
        assert_eq!(
            said.trim(),
            format!("{COLLECTOR} m1 {} True 20", LINUX.len())
        );
    }

    #[test]
    fn csv_cells_are_quoted_when_they_must_be() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\"\nthen"), "\"say \"\"hi\"\"\nthen\"");
    }
}
