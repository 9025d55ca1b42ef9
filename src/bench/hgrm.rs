//! `--hgrm FILE`: the latency histogram in HdrHistogram's percentile-distribution text
//! format, the `.hgrm` that wrk2 prints with `--latency` and HdrHistogram's plotter
//! (hdrhistogram.github.io/HdrHistogram/plotFiles.html) reads; the setup phases' beside
//! it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use std::fmt::Write as _;
use std::io::{self, Write};

use hdrhistogram::Histogram;

/// A distribution written with `--hgrm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The reply latency: the file given.
    Reply,
    Connect,
    /// With `--tls` only.
    Handshake,
    FirstReply,
}

impl Phase {
    pub(super) const ALL: [Phase; 4] = [
        Phase::Reply,
        Phase::Connect,
        Phase::Handshake,
        Phase::FirstReply,
    ];

    /// Where this phase goes for `--hgrm path`: the reply latency to `path`, a phase to
    /// `path` with the phase's name put before its extension (`lat.hgrm`:
    /// `lat.connect.hgrm`), or after it when it has none (`lat`: `lat.connect`).
    pub(super) fn path(self, path: &Path) -> PathBuf {
        let name = match self {
            Phase::Reply => return path.to_path_buf(),
            Phase::Connect => "connect",
            Phase::Handshake => "handshake",
            Phase::FirstReply => "first_reply",
        };
        let mut file = path.file_stem().map(OsString::from).unwrap_or_default();
        file.push(".");
        file.push(name);
        if let Some(ext) = path.extension() {
            file.push(".");
            file.push(ext);
        }
        path.with_file_name(file)
    }
}

/// Rows per halving of the distance to 100%, as wrk2 prints them.
pub(super) const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// The histogram counts nanoseconds; the file is in milliseconds, as wrk2's is.
pub(super) const NS_PER_MS: f64 = 1e6;

/// The percentile distribution of `hist`, its values divided by `scale`, as
/// HdrHistogram_c's `hdr_percentiles_print` (`CLASSIC`) writes it, which is what wrk2
/// prints: a header and a blank line; a row per percentile step (`ticks` per half
/// distance to 100%) with the value (as many decimals as the histogram has significant
/// digits), the percentile iterated to (6 decimals), the count up to that value and
/// 1/(1-percentile) (2 decimals; `inf` on the last row, at 1.0); then a footer of mean,
/// standard deviation, max, count and the histogram's shape. An empty histogram has the
/// header and the footer only.
pub(super) fn percentile_distribution(hist: &Histogram<u64>, ticks: u32, scale: f64) -> String {
    let mut s = String::new();
    let digits = usize::from(hist.sigfig());
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "{:>12} {:>12} {:>12} {:>12}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    // `iter_quantiles` panics on 0 ticks.
    for v in hist.iter_quantiles(ticks.max(1)) {
        total += v.count_since_last_iteration();
        let p = v.quantile_iterated_to();
        let _ = writeln!(
            s,
            "{:12.digits$} {:12.6} {:12} {:12.2}",
            v.value_iterated_to() as f64 / scale,
            p,
            total,
            1.0 / (1.0 - p)
        );
    }
    let max = if hist.is_empty() { 0 } else { hist.max() };
    let _ = writeln!(
        s,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        hist.mean() / scale,
        hist.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        max as f64 / scale,
        hist.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_buckets(hist.sigfig())
    );
    s
}

/// Sub-buckets per bucket of a histogram with `sigfig` significant digits: the power of
/// two that holds 2 × 10^sigfig, as HdrHistogram sizes them.
fn sub_buckets(sigfig: u8) -> u64 {
    // The crate allows at most 5 significant digits.
    (2 * 10u64.pow(u32::from(sigfig.min(5)))).next_power_of_two()
}

/// Opens `--hgrm FILE` for writing at the end of the run, before the run, so that a path
/// that cannot be written stops the bench at once. An existing file is kept as it is
/// until then.
pub(super) fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "--hgrm {}: cannot write to it: {e}; check the path and its permissions",
                    path.display()
                ),
            )
        })
}

/// Replaces what `file` (opened by [`open`] from `path`) holds with `text`.
pub(super) fn write(mut file: File, path: &Path, text: &str) -> io::Result<()> {
    file.set_len(0)
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("--hgrm {}: writing the histogram: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::state::WorkerResults;

    fn histogram(values_ns: &[u64]) -> Histogram<u64> {
        let mut t = WorkerResults::new().unwrap();
        for &v in values_ns {
            t.hist.record(v).unwrap();
        }
        t.hist
    }

    #[test]
    fn four_latencies_as_wrk2_prints_them() {
        // 1, 2, 3 and 4 ms: each in a bucket of its own, whose highest value is printed.
        // Past 0.75 every step is in the last bucket: the rows jump to 1.0, as in
        // HdrHistogram_c and Java. The mean and deviation are of the buckets' middles.
        let h = histogram(&[1_000_000, 2_000_000, 3_000_000, 4_000_000]);
        let text = percentile_distribution(&h, TICKS_PER_HALF_DISTANCE, NS_PER_MS);
        let expected = "       Value   Percentile   TotalCount 1/(1-Percentile)

       1.000     0.000000            1         1.00
       1.000     0.100000            1         1.11
       1.000     0.200000            1         1.25
       2.001     0.300000            2         1.43
       2.001     0.400000            2         1.67
       2.001     0.500000            2         2.00
       3.000     0.550000            3         2.22
       3.000     0.600000            3         2.50
       3.000     0.650000            3         2.86
       3.000     0.700000            3         3.33
       4.002     0.750000            4         4.00
       4.002     1.000000            4          inf
#[Mean    =        2.500, StdDeviation   =        1.118]
#[Max     =        4.002, Total count    =            4]
#[Buckets =           32, SubBuckets     =         2048]
";
        assert_eq!(text, expected);
    }

    #[test]
    fn rows_climb_to_1_and_count_every_value() {
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * 1_000).collect();
        let h = histogram(&values);
        let text = percentile_distribution(&h, TICKS_PER_HALF_DISTANCE, NS_PER_MS);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 50, "{text}");
        let p: Vec<f64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{text}");
        assert_eq!(p[0], 0.0);
        assert_eq!(*p.last().unwrap(), 1.0);
        let last = rows.last().unwrap();
        assert_eq!(last[2], "10000");
        assert_eq!(last[3], "inf");
        assert!(
            rows[..rows.len() - 1]
                .iter()
                .all(|r| r.len() == 4 && r[3] != "inf")
        );
        // 10 ms, to the histogram's precision: the highest value of its bucket.
        assert_eq!(last[0], "10.002");
    }

    #[test]
    fn an_empty_histogram_has_the_header_and_the_footer() {
        let text = percentile_distribution(&histogram(&[]), 5, NS_PER_MS);
        assert_eq!(
            text,
            "       Value   Percentile   TotalCount 1/(1-Percentile)

#[Mean    =        0.000, StdDeviation   =        0.000]
#[Max     =        0.000, Total count    =            0]
#[Buckets =           32, SubBuckets     =         2048]
"
        );
    }

    #[test]
    fn phases_go_beside_the_file_before_its_extension() {
        let at = |path: &str, phase: Phase| phase.path(Path::new(path));
        assert_eq!(at("lat.hgrm", Phase::Reply), Path::new("lat.hgrm"));
        assert_eq!(
            at("lat.hgrm", Phase::Connect),
            Path::new("lat.connect.hgrm")
        );
        assert_eq!(
            at("out/run 1/lat.hgrm", Phase::FirstReply),
            Path::new("out/run 1/lat.first_reply.hgrm")
        );
        assert_eq!(
            at("/tmp/a.b.hgrm", Phase::Handshake),
            Path::new("/tmp/a.b.handshake.hgrm")
        );
        assert_eq!(at("lat", Phase::Connect), Path::new("lat.connect"));
        assert_eq!(
            at("dir.d/lat", Phase::Connect),
            Path::new("dir.d/lat.connect")
        );
        assert_eq!(at(".hgrm", Phase::Connect), Path::new(".hgrm.connect"));
    }

    #[test]
    fn sub_buckets_are_sized_as_hdrhistogram_does() {
        assert_eq!(sub_buckets(1), 32);
        assert_eq!(sub_buckets(2), 256);
        assert_eq!(sub_buckets(3), 2048);
        assert_eq!(sub_buckets(5), 262_144);
    }
}
