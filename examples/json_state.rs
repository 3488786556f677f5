//! JSON state with revisions: `cargo run --example json_state`.
//!
//! `update_json` reads, changes and replaces a state file in one hold of
//! its lock, so concurrent updates never lose one. A copy read earlier and
//! saved later (`load_json`, then `save_if_revision`) is refused with
//! `LockError::Conflict` if someone saved in between: reload, redo, retry.

use std::collections::BTreeMap;

use async_filelock::{LockError, load_json, save_if_revision, update_json};

type Queue = BTreeMap<String, String>; // url -> status

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("queue.json");

    // Sixteen tasks add their entries at once: none is lost.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                update_json(&state, move |q: &mut Queue| {
                    q.insert(format!("https://example.org/{i}.pdf"), "queued".into());
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    let queue = load_json::<Queue>(&state).await?;
    println!(
        "{} entries at revision {}",
        queue.data.len(),
        queue.revision
    );

    // Optimistic: read, work without the lock, save if nobody else did.
    let mut mine = load_json::<Queue>(&state).await?;
    // … meanwhile another process marks an entry done …
    update_json(&state, |q: &mut Queue| {
        q.insert("https://example.org/0.pdf".into(), "done".into());
    })
    .await?;
    let mut tries = 0;
    loop {
        tries += 1;
        mine.data
            .insert("https://example.org/1.pdf".into(), "done".into());
        match save_if_revision(&state, mine.revision, &mine.data).await {
            Ok(revision) => {
                println!("saved at revision {revision} after {tries} tries");
                break;
            }
            Err(LockError::Conflict {
                expected, found, ..
            }) => {
                println!(
                    "conflict: my copy is revision {expected}, the file is at {found}; reloading"
                );
                mine = load_json(&state).await?;
            }
            Err(e) => return Err(e),
        }
    }
    let done = load_json::<Queue>(&state)
        .await?
        .data
        .values()
        .filter(|s| *s == "done")
        .count();
    assert_eq!(done, 2, "both updates kept");
    println!("both entries are done: nothing lost");
    Ok(())
}
