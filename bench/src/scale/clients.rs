//! Real clients: one `mytunnel http` process per tunnel, started `BATCH` at a time, each
//! counted once its URL answers through Caddy.

use std::time::{Duration, Instant};

use super::{fits, log_row, measure_row, Kind, Part};
use crate::client::{stop_all, Client, Starting};
use crate::dataplane::await_serving;
use crate::edge::Edge;
use crate::procs::Result;

/// How many clients start at once.
pub const BATCH: usize = 25;

/// Grows to each count of `counts`, then stops every client as Ctrl-C would.
pub(super) fn grow(edge: &Edge, app_port: u16, counts: &[usize], part: &mut Part) -> Result<()> {
    let mut clients = Vec::new();
    let result = grow_into(edge, app_port, counts, part, &mut clients);
    let (count, started) = (clients.len(), Instant::now());
    let killed = stop_all(clients, Duration::from_secs(60));
    eprintln!(
        "  scale: {count} clients stopped with SIGINT in {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if killed > 0 {
            format!(", {killed} killed after a minute")
        } else {
            String::new()
        }
    );
    result
}

fn grow_into(
    edge: &Edge,
    app_port: u16,
    counts: &[usize],
    part: &mut Part,
    clients: &mut Vec<Client>,
) -> Result<()> {
    for &count in counts {
        fits(part, count.saturating_sub(clients.len()))?;
        let started = Instant::now();
        while clients.len() < count {
            let batch = BATCH.min(count - clients.len());
            let starting = (0..batch)
                .map(|_| Starting::spawn(edge, app_port, &[]))
                .collect::<Result<Vec<_>>>()?;
            for one in starting {
                let client = one
                    .wait_url(Duration::from_secs(120))
                    .map_err(|e| format!("with {} clients up: {e}", clients.len()))?;
                clients.push(client);
            }
            for client in clients.iter().rev().take(batch) {
                await_serving(edge.http(), &client.host, Duration::from_secs(60))
                    .map_err(|e| format!("with {} clients: {e}", clients.len()))?;
            }
        }
        let hosts: Vec<String> = clients.iter().map(|c| c.host.clone()).collect();
        let roots: Vec<i32> = clients.iter().map(Client::pid).collect();
        let row = measure_row(edge, &hosts, &roots, started.elapsed())?;
        log_row(Kind::RealClients, part, &row);
        part.rows.push(row);
    }
    Ok(())
}
