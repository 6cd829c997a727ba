//! `weft scheduler` with its dashboard: served where asked, a taken
//! address asked for is a clear error, `--no-dashboard` serves nothing.
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
