// A std Mutex guard held across an .await, in a task that may move between threads.
use std::future::Future;
use std::sync::{Arc, Mutex};

// The bound tokio::spawn puts on a task, copied here so the example needs only std.
fn spawn<F>(task: F)
where
    F: Future + Send + 'static,
{
    drop(task);
}

async fn write_entry(_entry: u64) {}

pub fn record(written: Arc<Mutex<u64>>) {
    spawn(async move {
        let mut guard = written.lock().unwrap();
        *guard += 1;
        write_entry(*guard).await;
    });
}
