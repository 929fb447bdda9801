// The same map behind a RefCell: mutable through a shared reference, but only on one thread.
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

pub fn count_hits(paths: Vec<String>) {
    let hits = Arc::new(RefCell::new(HashMap::<String, u64>::new()));
    for path in paths {
        let hits = Arc::clone(&hits);
        thread::spawn(move || {
            *hits.borrow_mut().entry(path).or_insert(0) += 1;
        });
    }
}
