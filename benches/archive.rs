//! Debug-archive benchmark (issue 6): `jobq::debug::archive` must stream — memory flat whatever
//! the data folder's size — and be about as fast as `zip -r` of the same folder.
//!
//! ```sh
//! cargo bench --bench archive                         # 256 MiB data folder
//! JOBQ_BENCH_MB=2048 cargo bench --bench archive      # the documented full run (2 GiB)
//! ```
//!
//! Settings (environment): `JOBQ_BENCH_MB` (data folder size in MiB, default 256),
//! `JOBQ_BENCH_RUNS` (timed runs of each tool, default 3; the median is reported),
//! `JOBQ_BENCH_SMALL_FILES` (number of small files, default 8 per MiB, at least 200),
//! `TMPDIR` (where the data folder and the archives go).
//!
//! It generates a data folder like a real one (a few large CSV tables with semi-compressible
//! rows, a sliced table, thousands of small files, an incompressible blob, empty folders,
//! `config.json` with a `#password`), then times `jobq::debug::archive` in this process and
//! `zip -r -q` (Info-ZIP, deflate level 6) as a child process on the same folder, alternating
//! them. Memory: the peak RSS growth of this process while `archive` runs, from `VmHWM` after
//! resetting the high-water mark (`5` > `/proc/self/clear_refs`), and from `VmRSS` sampled every
//! 10 ms by a background thread; the maximum over the runs is reported (it is the first run's:
//! later runs reuse heap the allocator kept). Exits 1 if the growth exceeds 32 MiB; speed never fails the run
//! (it depends on the machine), it is only reported.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Peak RSS growth above which the run fails.
const RSS_LIMIT_MIB: f64 = 32.0;
const PASSWORD: &str = "bench-s3cret-password";

fn main() -> ExitCode {
    let mb = env_u64("JOBQ_BENCH_MB", 256).max(1);
    let runs = env_u64("JOBQ_BENCH_RUNS", 3).max(1) as usize;
    let small_files = env_u64("JOBQ_BENCH_SMALL_FILES", (mb * 8).max(200));

    let dir = tempfile::Builder::new()
        .prefix("jobq-bench-archive-")
        .tempdir()
        .expect("cannot create a temporary folder (set TMPDIR)");
    let data = dir.path().join("data");
    println!(
        "generating a {mb} MiB data folder in {} ...",
        data.display()
    );
    let started = Instant::now();
    let folder = generate(&data, mb * MIB, small_files).expect("cannot generate the data folder");
    println!(
        "  {:.1} MiB in {} files, {} folders ({} empty), {:.1} s",
        folder.bytes as f64 / MIB as f64,
        folder.files,
        folder.folders,
        folder.empty_folders,
        started.elapsed().as_secs_f64()
    );

    let hwm = HighWaterMark::available();
    if !hwm {
        println!("  note: /proc/self/clear_refs is not writable; peak RSS comes from 10 ms VmRSS samples only");
    }
    let sampler = Sampler::start();

    let zip_bin = which("zip");
    if zip_bin.is_none() {
        println!(
            "  note: `zip` is not on PATH, so there is no zip -r comparison \
             (apt-get install -y zip)"
        );
    }

    let jobq_target = dir.path().join("jobq.zip");
    let zip_target = dir.path().join("zip-r.zip");
    let mut jobq_times = Vec::new();
    let mut zip_times = Vec::new();
    let mut hwm_growth: Option<f64> = None;
    let mut sampled_growth = 0.0f64;
    let mut baseline_rss = 0.0f64;
    let mut archived = None;
    for run in 1..=runs {
        let _ = fs::remove_file(&jobq_target);
        // Measure from a settled state: the high-water mark reset, the sampler's max restarted.
        if hwm {
            HighWaterMark::reset();
        }
        let baseline = status_kib("VmRSS").unwrap_or(0);
        sampler.restart(baseline);
        let started = Instant::now();
        let result = jobq::debug::archive(&data, &jobq_target, "");
        let elapsed = started.elapsed();
        let sampled_max = sampler.stop();
        let peak = if hwm { status_kib("VmHWM") } else { None };
        let result = result.expect("jobq::debug::archive failed");
        let sampled = kib_to_mib(sampled_max.saturating_sub(baseline));
        sampled_growth = sampled_growth.max(sampled);
        if let Some(peak) = peak {
            let growth = kib_to_mib(peak.saturating_sub(baseline));
            hwm_growth = Some(hwm_growth.map_or(growth, |g: f64| g.max(growth)));
        }
        if run == 1 {
            baseline_rss = kib_to_mib(baseline); // later baselines include heap the allocator kept
        }
        println!(
            "  run {run}/{runs}: jobq {:.2} s (RSS growth: VmHWM {}, sampled {:.1} MiB)",
            elapsed.as_secs_f64(),
            peak.map_or("n/a".to_string(), |p| format!(
                "{:.1} MiB",
                kib_to_mib(p.saturating_sub(baseline))
            )),
            sampled
        );
        jobq_times.push(elapsed.as_secs_f64());
        archived = Some(result);

        if let Some(zip_bin) = &zip_bin {
            let _ = fs::remove_file(&zip_target); // zip -r would update an existing archive
            let started = Instant::now();
            let status = Command::new(zip_bin)
                .args(["-r", "-q"])
                .arg(&zip_target)
                .arg(".")
                .current_dir(&data)
                .stdin(Stdio::null())
                .status()
                .expect("cannot run zip");
            let elapsed = started.elapsed();
            assert!(status.success(), "zip -r failed: {status}");
            println!("  run {run}/{runs}: zip -r {:.2} s", elapsed.as_secs_f64());
            zip_times.push(elapsed.as_secs_f64());
        }
    }
    let archived = archived.expect("at least one run");
    // After the runs, so that the first run is measured in a fresh process (the allocator keeps
    // freed memory and later runs reuse it: their growth is near 0, the first run's is the one).
    self_check(hwm, &sampler);
    check_archive(&jobq_target, &archived, &folder);

    let input_mib = folder.bytes as f64 / MIB as f64;
    let jobq_time = median(&mut jobq_times);
    let jobq_size = size_mib(&jobq_target);
    println!();
    println!(
        "debug archive of a {input_mib:.0} MiB data folder ({} files, {} folders), median of {runs} run(s)",
        folder.files, folder.folders
    );
    println!(
        "| {:<22} | {:>9} | {:>9} | {:>13} | {:>9} |",
        "", "time (s)", "MiB/s", "archive (MiB)", "ratio"
    );
    println!(
        "|{:-<24}|{:->11}|{:->11}|{:->15}|{:->11}|",
        "", "", "", "", ""
    );
    let row = |name: &str, time: f64, size: f64| {
        println!(
            "| {:<22} | {:>9.2} | {:>9.1} | {:>13.1} | {:>8.1}% |",
            name,
            time,
            input_mib / time,
            size,
            100.0 * size / input_mib
        );
    };
    row("jobq::debug::archive", jobq_time, jobq_size);
    let mut ratio = None;
    if zip_bin.is_some() {
        let zip_time = median(&mut zip_times);
        row("zip -r -q (level 6)", zip_time, size_mib(&zip_target));
        ratio = Some(jobq_time / zip_time);
    }
    println!();
    if let Some(ratio) = ratio {
        println!("time jobq / zip -r: {ratio:.2} (below 1 = jobq faster)");
    }
    let growth = hwm_growth.unwrap_or(sampled_growth).max(sampled_growth);
    println!(
        "RSS: baseline {baseline_rss:.1} MiB before the first run; peak growth during archive: {} (VmHWM), {sampled_growth:.1} MiB (VmRSS sampled every 10 ms); limit {RSS_LIMIT_MIB:.0} MiB",
        hwm_growth.map_or("n/a".to_string(), |g| format!("{g:.1} MiB")),
    );
    if growth > RSS_LIMIT_MIB {
        println!("FAIL: archiving raised RSS by {growth:.1} MiB (> {RSS_LIMIT_MIB:.0} MiB): the archive does not stream");
        return ExitCode::FAILURE;
    }
    println!("ok: memory flat ({growth:.1} MiB growth for {input_mib:.0} MiB of input)");
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// The data folder

struct Folder {
    bytes: u64,
    files: u64,
    folders: u64,
    empty_folders: u64,
}

/// splitmix64: fast, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 48] = [
    "order",
    "customer",
    "invoice",
    "shipped",
    "pending",
    "returned",
    "premium",
    "standard",
    "prague",
    "brno",
    "berlin",
    "vienna",
    "london",
    "paris",
    "madrid",
    "warsaw",
    "online",
    "store",
    "mobile",
    "partner",
    "campaign",
    "newsletter",
    "discount",
    "voucher",
    "monthly",
    "annual",
    "trial",
    "renewal",
    "cancelled",
    "active",
    "inactive",
    "blocked",
    "electronics",
    "books",
    "garden",
    "sports",
    "toys",
    "fashion",
    "grocery",
    "furniture",
    "express",
    "economy",
    "pickup",
    "courier",
    "card",
    "transfer",
    "cash",
    "paypal",
];
const CURRENCIES: [&str; 4] = ["CZK", "EUR", "USD", "GBP"];

/// Writes CSV rows (a header, then semi-compressible rows: ids, timestamps, numbers and repeated
/// words) until the file holds `bytes` bytes.
fn write_csv(path: &Path, bytes: u64, rng: &mut Rng) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, File::create(path)?);
    let mut row = Vec::with_capacity(512);
    row.extend_from_slice(
        b"\"id\",\"created\",\"customer\",\"segment\",\"note\",\"amount\",\"currency\",\"paid\"\n",
    );
    let mut written = 0u64;
    let mut id = 1_000_000u64;
    while written < bytes {
        id += 1 + rng.below(3);
        let r = rng.next();
        write!(
            row,
            "\"{id}\",\"2025-{:02}-{:02}T{:02}:{:02}:{:02}Z\",\"customer_{}\",\"{}\",\"",
            1 + r % 12,
            1 + (r >> 4) % 28,
            (r >> 9) % 24,
            (r >> 14) % 60,
            (r >> 20) % 60,
            (r >> 26) % 50_000,
            WORDS[((r >> 42) % 8) as usize],
        )?;
        for i in 0..(2 + rng.below(6)) {
            if i > 0 {
                row.push(b' ');
            }
            row.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
        let r = rng.next();
        writeln!(
            row,
            "\",\"{}.{:02}\",\"{}\",\"{}\"",
            r % 100_000,
            (r >> 20) % 100,
            CURRENCIES[((r >> 30) % 4) as usize],
            if (r >> 33).is_multiple_of(3) {
                "false"
            } else {
                "true"
            },
        )?;
        let take = (row.len() as u64).min(bytes - written) as usize;
        out.write_all(&row[..take])?;
        written += take as u64;
        row.clear();
    }
    out.flush()
}

/// Random bytes: an already-compressed export (a `.gz` a component downloaded, say).
fn write_random(path: &Path, bytes: u64, rng: &mut Rng) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, File::create(path)?);
    let mut block = [0u8; 8 << 10];
    let mut written = 0u64;
    while written < bytes {
        for chunk in block.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let take = (block.len() as u64).min(bytes - written) as usize;
        out.write_all(&block[..take])?;
        written += take as u64;
    }
    out.flush()
}

fn generate(data: &Path, total: u64, small_files: u64) -> std::io::Result<Folder> {
    let mut rng = Rng(0x6a6f_6271);
    let mut folder = Folder {
        bytes: 0,
        files: 0,
        folders: 0,
        empty_folders: 0,
    };
    for dir in [
        "in/tables",
        "in/files",
        "in/user",
        "out/tables/sliced.csv",
        "out/files/empty",
        "out/tables/nothing-here",
    ] {
        fs::create_dir_all(data.join(dir))?;
    }
    folder.empty_folders = 3; // in/user, out/files/empty, out/tables/nothing-here

    let config = serde_json::json!({
        "storage": {"input": {"tables": [{"source": "in.c-main.orders", "destination": "orders.csv"}]}},
        "parameters": {"db": {"host": "db.example.com", "user": "bench", "#password": PASSWORD}},
        "image_parameters": {},
        "action": "run"
    });
    let small = |path: PathBuf, text: String, folder: &mut Folder| -> std::io::Result<()> {
        folder.bytes += text.len() as u64;
        folder.files += 1;
        fs::write(path, text)
    };
    small(
        data.join("config.json"),
        serde_json::to_string_pretty(&config)?,
        &mut folder,
    )?;
    small(
        data.join("in/state.json"),
        r##"{"#cursor": "c-123", "last": 42}"##.to_string(),
        &mut folder,
    )?;
    small(
        data.join("out/state.json"),
        r##"{"#cursor": "c-124", "last": 43}"##.to_string(),
        &mut folder,
    )?;

    // Many small files (0-16 KiB, some empty), 200 to a folder, in in/files and out/files.
    let mut small_bytes = 0u64;
    for i in 0..small_files {
        let side = if i % 2 == 0 { "in" } else { "out" };
        let dir = data.join(format!("{side}/files/batch_{:03}", i / 400));
        if i % 400 < 2 {
            fs::create_dir_all(&dir)?;
        }
        let len = if i % 50 == 0 { 0 } else { rng.below(16 << 10) };
        let path = dir.join(format!("{i}_report.csv"));
        if len == 0 {
            File::create(&path)?;
        } else {
            write_csv(&path, len, &mut rng)?;
        }
        small_bytes += len;
        folder.files += 1;
    }
    folder.bytes += small_bytes;
    let rest = total.saturating_sub(folder.bytes);

    // The remainder: an incompressible blob (3%), a sliced table (10%, 8 slices) and three large
    // tables (the rest).
    let blob = rest * 3 / 100;
    write_random(&data.join("out/files/export.gz"), blob, &mut rng)?;
    let slices = rest / 10 / 8;
    for i in 0..8 {
        write_csv(
            &data.join(format!("out/tables/sliced.csv/part_{i:03}.csv")),
            slices,
            &mut rng,
        )?;
    }
    let large = rest - blob - 8 * slices;
    let sizes = [large * 45 / 100, large * 30 / 100];
    let sizes = [sizes[0], sizes[1], large - sizes[0] - sizes[1]];
    for (name, bytes) in [
        "in/tables/orders.csv",
        "in/tables/events.csv",
        "out/tables/result.csv",
    ]
    .iter()
    .zip(sizes)
    {
        write_csv(&data.join(name), bytes, &mut rng)?;
    }
    folder.files += 1 + 8 + 3;
    folder.bytes += rest;
    folder.folders = count_folders(data)?;
    Ok(folder)
}

fn count_folders(dir: &Path) -> std::io::Result<u64> {
    let mut count = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            count += 1 + count_folders(&entry.path())?;
        }
    }
    Ok(count)
}

/// The archive holds every file and folder, and the password is hidden.
fn check_archive(target: &Path, archived: &jobq::debug::Archived, folder: &Folder) {
    assert_eq!(archived.files, folder.files, "files archived");
    assert_eq!(archived.folders, folder.folders, "folders archived");
    assert!(
        archived.skipped.is_empty(),
        "skipped: {:?}",
        archived.skipped
    );
    let mut zip = zip::ZipArchive::new(File::open(target).unwrap()).expect("a readable archive");
    assert_eq!(
        zip.len() as u64,
        folder.files + folder.folders,
        "archive entries"
    );
    let mut config = String::new();
    zip.by_name("config.json")
        .unwrap()
        .read_to_string(&mut config)
        .unwrap();
    assert!(
        !config.contains(PASSWORD),
        "the #password leaked into the archive"
    );
}

// ---------------------------------------------------------------------------------------------
// Memory

/// `VmHWM` (peak RSS) of this process, reset through `/proc/self/clear_refs`.
struct HighWaterMark;

impl HighWaterMark {
    fn available() -> bool {
        fs::write("/proc/self/clear_refs", "5").is_ok() && status_kib("VmHWM").is_some()
    }
    fn reset() {
        fs::write("/proc/self/clear_refs", "5").expect("cannot reset VmHWM");
    }
}

/// A value from `/proc/self/status`, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Samples `VmRSS` every 10 ms while running and keeps the maximum.
struct Sampler {
    running: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
}

impl Sampler {
    fn start() -> Sampler {
        let running = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (r, m) = (running.clone(), max.clone());
        thread::spawn(move || loop {
            if r.load(Ordering::Acquire) {
                if let Some(rss) = status_kib("VmRSS") {
                    m.fetch_max(rss, Ordering::AcqRel);
                }
            }
            thread::sleep(Duration::from_millis(10));
        });
        // Let the thread start (its stack) before any baseline is taken.
        thread::sleep(Duration::from_millis(30));
        Sampler { running, max }
    }
    fn restart(&self, baseline: u64) {
        self.max.store(baseline, Ordering::Release);
        self.running.store(true, Ordering::Release);
    }
    /// The maximum seen since `restart`, including one last sample now.
    fn stop(&self) -> u64 {
        self.running.store(false, Ordering::Release);
        thread::sleep(Duration::from_millis(20));
        let last = status_kib("VmRSS").unwrap_or(0);
        self.max.load(Ordering::Acquire).max(last)
    }
}

/// The measurement sees memory: 16 MiB touched for 100 ms must show as about 16 MiB.
fn self_check(hwm: bool, sampler: &Sampler) {
    if hwm {
        HighWaterMark::reset();
    }
    let baseline = status_kib("VmRSS").unwrap_or(0);
    sampler.restart(baseline);
    let block = std::hint::black_box(vec![1u8; 16 << 20]);
    thread::sleep(Duration::from_millis(100));
    let peak = if hwm { status_kib("VmHWM") } else { None };
    drop(block);
    let sampled = kib_to_mib(sampler.stop().saturating_sub(baseline));
    let seen = peak.map_or(sampled, |p| kib_to_mib(p.saturating_sub(baseline)));
    println!(
        "  self-check: a 16 MiB allocation shows as {seen:.1} MiB (VmHWM), {sampled:.1} MiB (sampled)"
    );
    assert!(
        (15.0..40.0).contains(&seen) && (15.0..40.0).contains(&sampled),
        "the RSS measurement does not see a 16 MiB allocation"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn size_mib(path: &Path) -> f64 {
    fs::metadata(path).map_or(0.0, |m| m.len() as f64 / MIB as f64)
}
