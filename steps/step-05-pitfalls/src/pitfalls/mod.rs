//! One module per pitfall, the broken handler first and the fixed one right after it, so the
//! difference is a few lines you can read at once.

pub mod blocking;
pub mod cancel;
pub mod leak;
pub mod reuse;
pub mod shared_state;
pub mod timeout;
pub mod upstream;
