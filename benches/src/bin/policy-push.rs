//! `policy-push`: pushes N policy overrides to adoxd's REST API, C at a time, each a
//! `POST /v1/policies` for its own zone (`pN.TAG.push.invalid.`), and reports the time
//! taken and the push rate as JSON. With `--import`, sends them as one bulk import instead.
//!
//! ```text
//! policy-push --api http://127.0.0.1:5390 --token TOKEN --count 100000 --concurrency 8
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn usage() -> ! {
    eprintln!("usage: policy-push --api URL --token TOKEN [--count N] [--concurrency C] [--tag TAG] [--import]");
    std::process::exit(2)
}

fn main() {
    let (mut api, mut token, mut count, mut concurrency, mut import) =
        (String::new(), String::new(), 100_000usize, 8usize, false);
    let mut tag = String::from("a");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--api" => api = val(),
            "--token" => token = val(),
            "--count" => count = val().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => concurrency = val().parse().unwrap_or_else(|_| usage()),
            "--tag" => tag = val(),
            "--import" => import = true,
            _ => usage(),
        }
    }
    let client = match adoxctl::Client::new(&api, Some(token)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("policy-push: {e}");
            std::process::exit(2)
        }
    };
    let body = move |i: usize| format!(r#"{{"zone":"p{i}.{tag}.push.invalid","mode":"cleartext","comment":"bench"}}"#);
    let start = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    if import {
        let list: Vec<String> = (0..count).map(body).collect();
        let bundle = format!(r#"{{"policies":[{}]}}"#, list.join(","));
        match client.request("POST", "/v1/policies/import?mode=merge", &[], Some(bundle.as_bytes())) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                eprintln!("policy-push: import refused: {} {}", r.status, r.text());
                errors.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("policy-push: {e}");
                errors.fetch_add(count, Ordering::Relaxed);
            }
        }
    } else {
        let next = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (client, next, errors, body) = (client.clone(), next.clone(), errors.clone(), body.clone());
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        match client.request("POST", "/v1/policies", &[], Some(body(i).as_bytes())) {
                            Ok(r) if r.status == 201 => {}
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        r#"{{"count":{count},"errors":{},"seconds":{secs:.2},"per_second":{:.0}}}"#,
        errors.load(Ordering::Relaxed),
        count as f64 / secs
    );
}
