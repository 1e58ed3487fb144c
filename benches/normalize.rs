//! Number normalization: the canonical E.164 fast path against the full
//! libphonenumber parse it avoids. Read the results as ratios within one run
//! (absolute times on a shared machine move by 2× between runs).
//!
//! `cargo bench --bench normalize`

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::domain::{Region, E164};

fn normalize(c: &mut Criterion) {
    let us: Region = "US".parse().expect("known region");
    let mut group = c.benchmark_group("e164");
    // Baseline: copying the input, the least any normalization must do.
    group.bench_function("baseline_copy", |b| {
        b.iter(|| black_box(Box::<str>::from(black_box("+14155550100"))))
    });
    group.bench_function("canonical_fast_path", |b| {
        b.iter(|| E164::parse(black_box("+14155550100"), None))
    });
    group.bench_function("sip_uri_user_part", |b| {
        b.iter(|| {
            E164::parse(
                black_box("sip:+14155550100@trunk.example.com;user=phone"),
                None,
            )
        })
    });
    group.bench_function("national_format_full_parse", |b| {
        b.iter(|| E164::parse(black_box("(415) 555-0100"), Some(us)))
    });
    group.finish();
}

criterion_group!(benches, normalize);
criterion_main!(benches);
