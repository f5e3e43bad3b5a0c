//! The pure planner: allocation over scopes and quantile cuts.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tranche::job::Cursor;
use tranche::plan::{allocate, cut_positions, range_partitions};

fn planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("planner");
    for partitions in [8u32, 64, 1024] {
        let count = 10_000_000u64;
        let positions = cut_positions(count, partitions);
        let cuts: Vec<Cursor> = positions
            .iter()
            .map(|&p| Cursor::new(p as i64 / 7, p as i64))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("cuts_and_ranges", partitions),
            &partitions,
            |b, &n| {
                b.iter(|| {
                    let positions = cut_positions(black_box(count), n);
                    range_partitions(count, &positions, black_box(&cuts))
                })
            },
        );
    }
    let counts: Vec<u64> = (0..500).map(|i| (i * 7919 % 100_000) as u64).collect();
    group.bench_function("allocate_500_scopes_4096_partitions", |b| {
        b.iter(|| allocate(black_box(&counts), 4096))
    });
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
