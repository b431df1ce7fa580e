//! Placeholder, replaced by the scrape benchmark.
fn main() {}
