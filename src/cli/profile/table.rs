//! `bitnetc profile`'s table for people: the run, the memory, then per phase its steps, the
//! threads' busy shares, the heaviest kernel groups and every layer (from the library's report,
//! `bitnetc::profile`).

use bitnetc::profile::report::PHASES;
use serde_json::Value;

/// Prints the report for people: the run, the memory, then per phase its steps, the threads'
/// busy shares, the heaviest groups and every layer.
pub fn print_table(report: &Value, top: usize) {
    let mem = &report["memory"];
    println!(
        "model {}  threads {}  launches {}  prompt {} tokens  decode {} steps × {} sequences",
        report["model"].as_str().unwrap_or("?"),
        report["threads"],
        report["program"]["launches"],
        report["prompt_len"],
        report["steps"],
        report["batch"].as_u64().unwrap_or(1),
    );
    let mb = |v: &Value| {
        v.as_f64()
            .map_or("n/a".to_string(), |b| format!("{:.2} MB", b / 1e6))
    };
    println!(
        "memory: arena {}  KV cache {}  weights {} ({})  peak RSS {}  allocations per decode token {}",
        mb(&mem["arena_bytes"]),
        mb(&mem["kv_bytes"]),
        mb(&mem["weights_bytes"]),
        mem["weights"].as_str().unwrap_or("?"),
        mb(&mem["peak_rss_bytes"]),
        mem["allocations"]["per_token"],
    );
    for name in PHASES {
        let p = &report["phases"][name];
        let s = &p["step"];
        println!(
            "\n{name}: {} step(s), {} tokens, step mean {:.3} ms (p50 {:.3}, p95 {:.3}, p99 {:.3}), launches {:.3} ms/step",
            p["steps"],
            p["tokens"],
            s["mean_ms"].as_f64().unwrap_or(0.0),
            s["p50_ms"].as_f64().unwrap_or(0.0),
            s["p95_ms"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            p["launch_ms_per_step"].as_f64().unwrap_or(0.0),
        );
        let busy: Vec<String> = p["busy"]
            .as_array()
            .map(|b| {
                b.iter()
                    .map(|x| format!("{:.0}%", 100.0 * x.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        println!("  threads busy (caller first): {}", busy.join(" "));
        print_rows("group", &p["groups"], top);
        print_rows("layer", &p["layers"], usize::MAX);
    }
}

/// Prints up to `top` rows of stats.
fn print_rows(what: &str, rows: &Value, top: usize) {
    println!(
        "  {:<44} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6}",
        what, "count", "total ms", "mean ms", "p50 ms", "p95 ms", "p99 ms", "share"
    );
    for r in rows.as_array().into_iter().flatten().take(top) {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "  {:<44} {:>6} {:>10.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>5.1}%",
            r["name"].as_str().unwrap_or("?"),
            r["count"],
            f("total_ms"),
            f("mean_ms"),
            f("p50_ms"),
            f("p95_ms"),
            f("p99_ms"),
            100.0 * f("share"),
        );
    }
}
