//! `weft scheduler` with its dashboard: served where asked, a taken
//! address asked for is a clear error, `--no-dashboard` serves nothing;
//! `weft worker` serves its own page where asked, linked from the
//! scheduler's, or none with `--no-dashboard`; `weft report` writes the
//! scheduler's performance report from its dashboard.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn weft(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.args(args);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_scheduler_serves_its_dashboard_where_asked() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = weft(&[
        "scheduler",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dashboard-address",
        &address,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = loop {
        let line = lines
            .next()
            .expect("the scheduler says where its dashboard is")
            .unwrap();
        if line.starts_with("dashboard at ") {
            break line;
        }
        assert!(Instant::now() < deadline);
    };
    assert_eq!(said, format!("dashboard at http://{address}"));
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_taken_dashboard_address_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = weft(&[
        "scheduler",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dashboard-address",
        &address,
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&address) && stderr.contains("--dashboard-address") && stderr.contains("--no-dashboard"),
        "{stderr}"
    );
}

#[test]
fn no_dashboard_serves_nothing() {
    let mut child = weft(&["scheduler", "--listen", "tcp://127.0.0.1:0", "--no-dashboard"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("scheduler at "), "{first}");
    // Nothing more is printed: with a dashboard, its line follows the
    // scheduler's at once; a second is plenty.
    std::thread::sleep(Duration::from_secs(1));
    let _ = child.kill();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().all(|l| !l.starts_with("dashboard at")), "{rest:?}");
    let _ = child.wait();
}

/// GETs `path` from `address` (HOST:PORT); the body of a 200 answer.
fn get(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Kills the process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_worker_serves_its_page_where_asked_and_the_scheduler_links_it() {
    let board = format!("127.0.0.1:{}", free_port());
    let mut scheduler = weft(&[
        "scheduler",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dashboard-address",
        &board,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kept open: a scheduler whose stdout is closed dies on its next line.
    let mut stdout = BufReader::new(scheduler.stdout.take().unwrap()).lines();
    let first = stdout.next().unwrap().unwrap();
    let _scheduler = Killed(scheduler);
    let address = first.strip_prefix("scheduler at ").expect("its address").to_string();
    let page = format!("127.0.0.1:{}", free_port());
    let worker = |name: &str, flags: &[&str]| {
        let mut args = vec![
            "worker",
            &address,
            "--nthreads",
            "1",
            "--name",
            name,
            "--listen",
            "tcp://127.0.0.1:0",
        ];
        args.extend_from_slice(flags);
        Killed(weft(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
    };
    let _w0 = worker("w0", &["--dashboard-address", &page]);
    let _w1 = worker("w1", &["--no-dashboard"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let state = get(&board, "/api/state").unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        if let Some(workers) = state["workers"].as_array().filter(|w| w.len() == 2) {
            break workers.clone();
        }
        assert!(Instant::now() < deadline, "two workers within 30 s: {state}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let linked = |name: &str| workers.iter().find(|w| w["name"] == name).unwrap()["dashboard"].clone();
    assert_eq!(linked("w0"), format!("http://{page}"));
    assert!(linked("w1").is_null(), "{workers:?}");
    let metrics = get(&page, "/metrics").expect("the worker's /metrics");
    assert!(metrics.contains("weft_worker_info{worker=\"w0\""), "{metrics}");
    assert!(
        metrics.contains("weft_worker_cpu_seconds_total{worker=\"w0\"}"),
        "{metrics}"
    );
    let own = get(&page, "/").expect("the worker's page");
    assert!(own.contains("<title>Weft worker</title>"));
}

#[test]
fn the_worker_processes_of_weft_local_serve_their_pages_too() {
    let board = format!("127.0.0.1:{}", free_port());
    let local = weft(&[
        "local",
        "--listen",
        "tcp://127.0.0.1:0",
        "--workers",
        "2",
        "--nthreads",
        "1",
        "--dashboard-address",
        &board,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _local = Killed(local);
    let deadline = Instant::now() + Duration::from_secs(30);
    let links: Vec<String> = loop {
        let state = get(&board, "/api/state").unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        let links: Vec<String> = state["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["dashboard"].as_str().map(String::from))
            .collect();
        if links.len() == 2 {
            break links;
        }
        assert!(Instant::now() < deadline, "two linked workers within 30 s: {state}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for link in links {
        let address = link.strip_prefix("http://").expect("an http link");
        let metrics = get(address, "/metrics").expect("the worker's /metrics");
        assert!(metrics.contains("weft_worker_info{worker=\"local-"), "{metrics}");
    }
}

/// `weft report` writes the running scheduler's report (one standalone
/// HTML file: nothing fetched from the network); a dashboard that is not
/// there is a clear error and writes nothing.
#[test]
fn weft_report_writes_a_standalone_file_from_the_dashboard() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut scheduler = Killed(
        weft(&[
            "scheduler",
            "--listen",
            "tcp://127.0.0.1:0",
            "--dashboard-address",
            &address,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&address, "/health").is_none() {
        assert!(Instant::now() < deadline, "no dashboard at {address}");
        assert!(scheduler.0.try_wait().unwrap().is_none(), "the scheduler exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("report.html");
    let out = weft(&["report", "--dashboard", &address, "--seconds", "10", "-o"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&output).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..html.len().min(200)]);
    assert!(html.contains("<title>Weft performance report</title>"));
    assert!(html.contains("const DATA = "));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    drop(scheduler);
    let missing = dir.path().join("missing.html");
    let out = weft(&["report", "--dashboard", &address, "-o"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the dashboard at"), "{stderr}");
    assert!(!missing.exists());
}
