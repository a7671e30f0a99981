//! Live output on both engines: a piece is taken only while its command
//! runs on the machine that sends it, only where its stream ends and within
//! the most kept; pieces are numbered in their scope (a batch's pieces in
//! one sequence, also when machines send at once from two nodes); a
//! batch's ends are listed in order; forgetting keeps the last number.

use reach_proto::agent::Stream;

use super::*;

fn script_batch(id: &str, machines: &[String]) -> NewBatch {
    let now = Micros::now();
    NewBatch {
        id: id.into(),
        tenant_id: TENANT.into(),
        requestor: "analyst".into(),
        requestor_id: "app:analyst".into(),
        requestor_comment: None,
        commands: vec![run_script("s.sh")],
        targets: machines
            .iter()
            .map(|m| BatchTarget {
                machine_id: m.clone(),
                computer_dns_name: format!("name-{}", &m[38..]),
            })
            .collect(),
        rollout: None,
        expires: now.plus_secs(3600),
        now,
    }
}

const PAGE: PageSize = PageSize {
    pieces: 100,
    chars: 1 << 20,
};

const ONE: PageSize = PageSize {
    pieces: 1,
    chars: 1 << 20,
};

fn done() -> Finish {
    Finish::Completed { file_sha256: None }
}

fn stored(appended: Appended) -> u64 {
    match appended {
        Appended::Stored { seq, .. } => seq,
        other => panic!("expected the piece stored, got {other:?}"),
    }
}

#[tokio::test]
async fn pieces_are_taken_in_order_from_the_machine_running_the_command() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![run_script("a.sh")]).await;
        let command = CommandRef {
            action_id: "a1".into(),
            index: 0,
        };
        let append = async |machine: &str, stream, offset, text: &str| {
            store
                .append_output(machine, &command, stream, offset, text, 10)
                .await
                .unwrap()
        };
        let name = backend.name;
        assert_eq!(
            append(&machine, Stream::Stdout, 0, "ab").await,
            Appended::NotRunning,
            "{name}: not handed out yet"
        );
        store
            .claim_next_command(&machine, "agent-1", Micros::now(), Lane::Live)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            append(&machine, Stream::Stdout, 0, "ab").await,
            Appended::Stored {
                seq: 1,
                batch_id: None
            }
        );
        assert_eq!(
            append(&machine, Stream::Stdout, 0, "ab").await,
            Appended::Gap,
            "{name}: a repeat"
        );
        assert_eq!(
            append(&machine, Stream::Stdout, 5, "x").await,
            Appended::Gap,
            "{name}: a hole"
        );
        assert_eq!(stored(append(&machine, Stream::Stderr, 0, "e").await), 2);
        assert_eq!(stored(append(&machine, Stream::Stdout, 2, "cd").await), 3);
        assert_eq!(
            append(&machine, Stream::Stdout, 4, "1234567").await,
            Appended::Full,
            "{name}: past the most kept"
        );
        let other = format!("{:040x}", 99);
        assert_eq!(
            append(&other, Stream::Stdout, 4, "x").await,
            Appended::NotRunning
        );

        let texts = |chunks: Vec<OutputChunk>| -> Vec<(u64, Stream, u64, String)> {
            chunks
                .into_iter()
                .map(|c| (c.seq, c.stream, c.offset, c.text))
                .collect()
        };
        assert_eq!(
            texts(store.output_after(&command, 0, PAGE).await.unwrap()),
            vec![
                (1, Stream::Stdout, 0, "ab".to_string()),
                (2, Stream::Stderr, 0, "e".to_string()),
                (3, Stream::Stdout, 2, "cd".to_string()),
            ]
        );
        assert_eq!(store.output_after(&command, 1, ONE).await.unwrap().len(), 1);
        // A page of few characters: the first piece always, then only
        // pieces that start within them.
        let few = |chars| PageSize { pieces: 100, chars };
        let seqs = async |chars| -> Vec<u64> {
            let page = store.output_after(&command, 0, few(chars)).await.unwrap();
            page.iter().map(|c| c.seq).collect()
        };
        assert_eq!(seqs(1).await, vec![1], "{name}");
        assert_eq!(seqs(2).await, vec![1], "{name}: \"ab\" fills 2");
        assert_eq!(seqs(3).await, vec![1, 2], "{name}");
        assert_eq!(seqs(4).await, vec![1, 2, 3], "{name}");
        let progress = store.output_progress(&command).await.unwrap();
        assert_eq!(
            (
                progress.stdout_live,
                progress.stderr_live,
                progress.last_seq
            ),
            (4, 1, 3)
        );
        assert!(!progress.ended());

        store
            .finish_command(&machine, &command, &done(), None, Micros::now())
            .await
            .unwrap();
        assert_eq!(
            append(&machine, Stream::Stdout, 4, "x").await,
            Appended::NotRunning,
            "{name}: ended"
        );
        assert!(store.output_progress(&command).await.unwrap().ended());

        // Kept until the period after the end passes.
        let before_end = Micros::now().minus_secs(60);
        assert_eq!(store.forget_output(before_end, 10).await.unwrap(), 0);
        let later = Micros::now().plus_secs(1);
        assert_eq!(store.forget_output(later, 10).await.unwrap(), 1);
        assert!(
            store
                .output_after(&command, 0, PAGE)
                .await
                .unwrap()
                .is_empty()
        );
        let forgotten = store.output_progress(&command).await.unwrap();
        assert_eq!(
            (
                forgotten.stdout_live,
                forgotten.stderr_live,
                forgotten.last_seq
            ),
            (0, 0, 3),
            "{name}: the last number stays"
        );
        assert_eq!(store.forget_output(later, 10).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_batch_numbers_every_machines_pieces_in_one_sequence() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        store
            .create_batch(&script_batch("b1", &machines))
            .await
            .unwrap();
        let mut commands = Vec::new();
        for machine in &machines {
            let claimed = store
                .claim_next_command(machine, "agent-1", Micros::now(), Lane::Live)
                .await
                .unwrap()
                .unwrap();
            commands.push(claimed.command);
        }
        // Both machines at once, each from its own store (two nodes on
        // PostgreSQL), twenty pieces each.
        let mut tasks = Vec::new();
        for (machine, command) in machines.iter().zip(&commands) {
            let store = backend.open().await;
            let (machine, command) = (machine.clone(), command.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..20u64 {
                    let appended = store
                        .append_output(&machine, &command, Stream::Stdout, i * 3, "ab\n", 1000)
                        .await
                        .unwrap();
                    let Appended::Stored { batch_id, .. } = appended else {
                        panic!("stored: {appended:?}");
                    };
                    assert_eq!(batch_id.as_deref(), Some("b1"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let pieces = store.batch_output_after("b1", 0, 0, PAGE).await.unwrap();
        let seqs: Vec<u64> = pieces.iter().map(|p| p.chunk.seq).collect();
        assert_eq!(
            seqs,
            (1..=40).collect::<Vec<_>>(),
            "{}: one sequence",
            backend.name
        );
        for machine in &machines {
            let offsets: Vec<u64> = pieces
                .iter()
                .filter(|p| &p.machine_id == machine)
                .map(|p| p.chunk.offset)
                .collect();
            assert_eq!(offsets, (0..20).map(|i| i * 3).collect::<Vec<_>>());
        }
        assert_eq!(
            pieces[0].computer_dns_name,
            format!("name-{}", &pieces[0].machine_id[38..])
        );
        assert_eq!(
            store
                .batch_output_after("b1", 0, 39, PAGE)
                .await
                .unwrap()
                .len(),
            1
        );

        // Ends, in order of time then action.
        let none = (Micros(0), "");
        assert!(
            store
                .batch_output_ends("b1", 0, none, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .finish_command(&machines[1], &commands[1], &done(), None, Micros::now())
            .await
            .unwrap();
        let ends = store.batch_output_ends("b1", 0, none, 10).await.unwrap();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].machine_id, machines[1]);
        assert_eq!(ends[0].progress.stdout_live, 60);
        assert!(ends[0].progress.last_seq >= 20);
        let after = (ends[0].ended, ends[0].action_id.as_str());
        assert!(
            store
                .batch_output_ends("b1", 0, after, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .finish_command(&machines[0], &commands[0], &done(), None, Micros::now())
            .await
            .unwrap();
        let rest = store.batch_output_ends("b1", 0, after, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].machine_id, machines[0]);
    }
}
