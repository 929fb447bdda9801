// Go's shared map, written from many threads at once. Rust rejects it.
use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

pub fn count_hits(paths: Vec<String>) {
    let hits: Arc<HashMap<String, u64>> = Arc::new(HashMap::new());
    for path in paths {
        let hits = Arc::clone(&hits);
        thread::spawn(move || {
            *hits.entry(path).or_insert(0) += 1;
        });
    }
}
