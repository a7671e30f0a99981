#[cfg(target_os = "linux")]
mod linux {
    use super::super::*;
    use tokio::io::AsyncBufReadExt;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('Z'))
            })
            .unwrap_or(false)
    }

    async fn gone(pid: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while alive(pid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pid} is still alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn containment(dir: &Path, cgroups: Option<PathBuf>) -> Containment {
        let records = dir.join("scripts");
        std::fs::create_dir_all(&records).unwrap();
        Containment {
            cgroups,
            records,
            key: format!("t{:x}", rand::random::<u64>()),
        }
    }

    /// Starts a script whose child leaves its process group; the child's pid.
    async fn escaping_script(
        containment: &Containment,
        name: &str,
    ) -> (Hold, tokio::process::Child, u32) {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg("setsid sleep 300 &\necho $!\nwait\n")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut hold = containment.prepare(&mut command, name);
        let mut child = command.spawn().unwrap();
        hold.attach(&child);
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let pid: u32 = lines
            .next_line()
            .await
            .unwrap()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(pid));
        // `$!` is printed as soon as the shell forks: wait until the child
        // runs `sleep`. While a process is between fork and exec its
        // environment may read as empty, and a scan for the marker would
        // pass it by (the test would then see a survivor the product never
        // leaves once the process runs).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim() != "sleep")
            .unwrap_or(true)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pid} never ran sleep"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (hold, child, pid)
    }

    #[tokio::test]
    async fn without_cgroups_the_marker_finds_what_left_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let containment = containment(dir.path(), None);
        let (hold, mut child, pid) = escaping_script(&containment, "a.0").await;
        assert!(
            containment.records.join("a.0").exists(),
            "recorded while it runs"
        );
        hold.release(Some(&mut child)).await;
        gone(pid).await;
        assert!(!containment.records.join("a.0").exists());
    }

    #[tokio::test]
    async fn a_cgroup_holds_every_descendant_when_available() {
        let dir = tempfile::tempdir().unwrap();
        let key = format!("unit{:x}", rand::random::<u32>());
        let Some(cgroups) = cgroup::scripts_dir(&key) else {
            eprintln!("skipped: no writable cgroup v2 hierarchy here");
            return;
        };
        let containment = containment(dir.path(), Some(cgroups.clone()));
        let (hold, mut child, pid) = escaping_script(&containment, "b.0").await;
        assert!(
            cgroup::holds(&cgroups.join("b.0"), pid),
            "the escaped child is in the cgroup"
        );
        hold.release(Some(&mut child)).await;
        gone(pid).await;
        assert!(
            !cgroups.join("b.0").exists(),
            "the script's cgroup is removed"
        );
        drop(containment);
        assert!(!cgroups.exists(), "and the agent's, once it stops");
    }

    #[tokio::test]
    async fn the_next_start_ends_what_a_crashed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let first = containment(dir.path(), None);
        let (hold, child, pid) = escaping_script(&first, "c.0").await;
        // The agent dies: nothing releases the hold, the record stays.
        let mut hold = hold;
        hold.released = true;
        drop(hold);
        std::mem::forget(child);
        assert!(alive(pid));
        let again = Containment {
            cgroups: None,
            records: first.records.clone(),
            key: first.key.clone(),
        };
        again.end_leftovers();
        gone(pid).await;
        assert!(std::fs::read_dir(&again.records).unwrap().next().is_none());
    }
}
