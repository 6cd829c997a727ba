//! Spill bandwidth next to `dd` with the same block size, measured in one
//! run on the same directory: the memory manager's writes of 64 MiB
//! results against `dd bs=64M` writing from `/dev/zero`, and its reads
//! back into pooled buffers against `dd` reading to `/dev/null`.
//!
//! Usage: `cargo run --release -p weft-benches --bin spill-report [DIR]`
//! (default: the system's temporary directory).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use weft_benches::median;
use weft_runtime::Value;
use weft_runtime::store::SpillDir;
use weft_transport::{Buffer, BufferPool};

const REPS: usize = 7;
const BLOCK: usize = 64 << 20;
/// Results per rep: 1 GiB in all.
const COUNT: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let parent = std::env::args().nth(1).map_or_else(std::env::temp_dir, Into::into);
    let root = parent.join(format!("weft-spill-report-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = measure(&root);
    std::fs::remove_dir_all(&root)?;
    let (write, read, dd_write, dd_read) = result?;
    let gb = (BLOCK * COUNT) as f64 / 1e9;
    let rate = |s: f64| gb / s;
    println!(
        "spill write: {:.2} GB/s; dd bs=64M write: {:.2} GB/s; ratio {:.0}%",
        rate(write),
        rate(dd_write),
        100.0 * dd_write / write
    );
    println!(
        "spill read:  {:.2} GB/s; dd bs=64M read:  {:.2} GB/s; ratio {:.0}%",
        rate(read),
        rate(dd_read),
        100.0 * dd_read / read
    );
    let line = json!({
        "dir": parent.display().to_string(), "bytes": BLOCK * COUNT, "block": BLOCK, "reps": REPS,
        "write_gbps": rate(write), "dd_write_gbps": rate(dd_write), "write_vs_dd": dd_write / write,
        "read_gbps": rate(read), "dd_read_gbps": rate(dd_read), "read_vs_dd": dd_read / read,
    });
    println!("{line}");
    Ok(())
}

/// Median seconds of: spill writes, spill reads, dd writes, dd reads.
fn measure(root: &Path) -> Result<(f64, f64, f64, f64), Box<dyn std::error::Error>> {
    let data: Vec<u8> = (0..BLOCK).map(|i| i as u8).collect();
    let value = Value {
        header: Default::default(),
        frames: vec![Buffer::host(data)],
    };
    let pool = BufferPool::new(2 * BLOCK);
    let (mut write, mut read, mut dd_write, mut dd_read) = (vec![], vec![], vec![], vec![]);
    for rep in 0..REPS {
        // Alternate who goes first: the page cache's write-back of one
        // run's bytes can slow the next writer down.
        if rep % 2 == 1 {
            dd_pair(root, rep, &mut dd_write, &mut dd_read)?;
        }
        let dir = SpillDir::new(root.join(format!("rep-{rep}")));
        let started = Instant::now();
        let files = (0..COUNT).map(|_| dir.write(&value)).collect::<Result<Vec<_>, _>>()?;
        write.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for file in &files {
            // Each read value is dropped at once, so its buffer returns to
            // the pool, as an unspilled result's does once it is consumed.
            let back = file.read(&pool)?;
            assert_eq!(back.nbytes() as usize, BLOCK);
        }
        read.push(started.elapsed().as_secs_f64());
        drop(files);
        if rep % 2 == 0 {
            dd_pair(root, rep, &mut dd_write, &mut dd_read)?;
        }
    }
    Ok((
        median(&mut write),
        median(&mut read),
        median(&mut dd_write),
        median(&mut dd_read),
    ))
}

/// One `dd` write of a file and one read of it back.
fn dd_pair(
    root: &Path,
    rep: usize,
    write: &mut Vec<f64>,
    read: &mut Vec<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let target = root.join(format!("dd-{rep}"));
    write.push(dd(&["if=/dev/zero", &format!("of={}", target.display())])?);
    read.push(dd(&[&format!("if={}", target.display()), "of=/dev/null"])?);
    std::fs::remove_file(&target)?;
    Ok(())
}

/// Seconds `dd` takes to copy `COUNT` blocks of 64 MiB.
fn dd(args: &[&str]) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let status = Command::new("dd")
        .args(args)
        .args(["bs=64M", &format!("count={COUNT}"), "status=none"])
        .status()?;
    if !status.success() {
        return Err(format!("dd {args:?} failed: {status}").into());
    }
    Ok(started.elapsed().as_secs_f64())
}
