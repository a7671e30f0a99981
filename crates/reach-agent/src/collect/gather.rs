//! Gathering one data point within its bounds: a command run directly
//! (never through a shell) for at most `Bounds::command_time` with its
//! output cut at `Bounds::point_bytes`, files read up to that many bytes,
//! a listing of folders up to `Bounds::listing_entries`. Whatever fails is
//! said in the point's error, never raised.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::Bounds;
use super::points::{DataPoint, Source};

/// What a data point gave: its files, and how it went.
pub(super) struct Gathered {
    /// Its files: path in the package, bytes.
    pub(super) files: Vec<(String, Vec<u8>)>,
    /// What ran (or was read).
    pub(super) command: String,
    /// What went wrong, if anything.
    pub(super) error: Option<String>,
}

/// Gathers `point` within `bounds`.
pub(super) async fn gather(point: &DataPoint, bounds: Bounds) -> Gathered {
    match &point.source {
        Source::Command(args) => run(point.path, args, bounds).await,
        Source::FirstOf(choices) => {
            let found = choices.iter().find(|args| program_exists(args[0]));
            match found {
                Some(args) => run(point.path, args, bounds).await,
                None => failed(
                    choices
                        .iter()
                        .map(|c| c[0])
                        .collect::<Vec<_>>()
                        .join(" or "),
                    "none of these programs is installed",
                ),
            }
        }
        Source::File(path) => match read_bounded(Path::new(path), bounds.point_bytes) {
            Ok((bytes, cut)) => Gathered {
                files: vec![(point.path.to_string(), bytes)],
                command: format!("read {path}"),
                error: cut.then(|| format!("cut at {} bytes", bounds.point_bytes)),
            },
            Err(err) => failed(format!("read {path}"), &err.to_string()),
        },
        Source::Folders(folders) => read_folders(point.path, folders, bounds),
        Source::Histories(names) => histories(point.path, names, bounds),
        Source::Listing(folders) => listing(point.path, folders, bounds),
    }
}

fn failed(command: String, error: &str) -> Gathered {
    Gathered {
        files: Vec::new(),
        command,
        error: Some(error.to_string()),
    }
}

fn program_exists(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `args`, keeping at most `point_bytes` of its output, for at most
/// `command_time`.
async fn run(path: &str, args: &[&str], bounds: Bounds) -> Gathered {
    let command = args.join(" ");
    let mut child = match tokio::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return failed(command, &format!("{} is not installed", args[0]));
        }
        Err(err) => return failed(command, &err.to_string()),
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let limit = bounds.point_bytes as u64;
    let read = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (a, b) = tokio::join!(
            async {
                if let Some(pipe) = stdout.as_mut() {
                    let _ = pipe.take(limit + 1).read_to_end(&mut out).await;
                }
            },
            async {
                if let Some(pipe) = stderr.as_mut() {
                    let _ = pipe.take(64 * 1024).read_to_end(&mut err).await;
                }
            }
        );
        let _ = (a, b);
        let status = child.wait().await;
        (out, err, status)
    };
    let (mut out, err, status) = match tokio::time::timeout(bounds.command_time, read).await {
        Ok(done) => done,
        Err(_) => {
            return failed(
                command,
                &format!("did not end within {} s", bounds.command_time.as_secs()),
            );
        }
    };
    let cut = out.len() as u64 > limit;
    out.truncate(bounds.point_bytes);
    let error = match status {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!(
            "exited with {status}: {}",
            String::from_utf8_lossy(&err).trim()
        )),
        Err(why) => Some(why.to_string()),
    };
    let error = match (error, cut) {
        (None, true) => Some(format!("cut at {} bytes", bounds.point_bytes)),
        (error, _) => error,
    };
    Gathered {
        files: if out.is_empty() && error.is_some() {
            Vec::new()
        } else {
            vec![(path.to_string(), out)]
        },
        command,
        error,
    }
}

/// At most `limit` bytes of `path`; whether more was cut.
fn read_bounded(path: &Path, limit: usize) -> std::io::Result<(Vec<u8>, bool)> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    let cut = bytes.len() > limit;
    bytes.truncate(limit);
    Ok((bytes, cut))
}

/// Every regular file directly in `folders`, under `into/`, within one
/// data point's bytes.
fn read_folders(into: &str, folders: &[&str], bounds: Bounds) -> Gathered {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut left = bounds.point_bytes;
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match read_bounded(&entry.path(), left) {
                Ok((bytes, cut)) => {
                    left -= bytes.len();
                    if cut {
                        errors.push(format!(
                            "{} cut: the data point's bytes ran out",
                            entry.path().display()
                        ));
                    }
                    let folder_name = folder.trim_start_matches('/').replace('/', "_");
                    files.push((format!("{into}/{folder_name}/{name}"), bytes));
                }
                Err(err) => errors.push(format!("{}: {err}", entry.path().display())),
            }
        }
    }
    Gathered {
        files,
        command: format!("read {}", folders.join(", ")),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// Each user's shell histories (root's and every home folder's).
fn histories(into: &str, names: &[&str], bounds: Bounds) -> Gathered {
    // Root's home on Linux and on macOS, and the users' homes of both.
    let mut homes = vec![
        (String::from("root"), PathBuf::from("/root")),
        (String::from("root"), PathBuf::from("/var/root")),
    ];
    for folder in ["/home", "/Users"] {
        if let Ok(entries) = std::fs::read_dir(folder) {
            for entry in entries.flatten() {
                homes.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut left = bounds.point_bytes;
    for (user, home) in homes {
        for name in names {
            let path = home.join(name);
            if !path.is_file() {
                continue;
            }
            match read_bounded(&path, left) {
                Ok((bytes, cut)) => {
                    left -= bytes.len();
                    if cut {
                        errors.push(format!(
                            "{} cut: the data point's bytes ran out",
                            path.display()
                        ));
                    }
                    files.push((format!("{into}/{user}{name}"), bytes));
                }
                Err(err) => errors.push(format!("{}: {err}", path.display())),
            }
        }
    }
    Gathered {
        files,
        command: format!(
            "read ~/{} of root and /home/*, /Users/*",
            names.join(", ~/")
        ),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// `mode uid gid size modified path` of everything in `folders`, four
/// levels down, at most `listing_entries` lines; links are not followed.
fn listing(path: &str, folders: &[&str], bounds: Bounds) -> Gathered {
    use std::fmt::Write;
    let mut text = String::from("mode\tuid\tgid\tsize\tmodified (s since 1970)\tpath\n");
    let mut count = 0;
    let mut stack: Vec<(PathBuf, usize)> = folders.iter().map(|f| (PathBuf::from(f), 0)).collect();
    let mut cut = false;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if count >= bounds.listing_entries {
                cut = true;
                break;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let (mode, uid, gid) = unix_owner(&meta);
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "{mode:o}\t{uid}\t{gid}\t{}\t{modified}\t{}",
                meta.len(),
                entry.path().display()
            );
            count += 1;
            if meta.is_dir() && depth < 4 {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    Gathered {
        files: vec![(path.to_string(), text.into_bytes())],
        command: format!("list {}", folders.join(", ")),
        error: cut.then(|| format!("cut at {} entries", bounds.listing_entries)),
    }
}

#[cfg(unix)]
fn unix_owner(meta: &std::fs::Metadata) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    (meta.mode(), meta.uid(), meta.gid())
}

#[cfg(not(unix))]
fn unix_owner(_meta: &std::fs::Metadata) -> (u32, u32, u32) {
    (0, 0, 0)
}
