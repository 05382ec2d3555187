//! The ledger every consumer process appends to, and the verdict read from it.
//!
//! Lines: `E pid order` when a handler's effect happens (Redis mode), `C pid order outcome`
//! when a key's commit settled, `A pid order ms` when a message is acked. In inbox mode the
//! effects are rows in the database instead, written in the handler's transaction.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Appends lines to the ledger; one `write` per line, in append mode, so processes interleave
/// whole lines.
#[derive(Debug)]
pub struct Ledger(Mutex<std::fs::File>);

impl Ledger {
    /// Opens (creates) the ledger at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Ledger(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )))
    }

    /// Appends one line (with its newline).
    pub fn line(&self, line: String) {
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A lost ledger line would hide an effect: fail loudly rather than undercount.
        file.write_all(line.as_bytes()).expect("ledger write");
    }
}

/// Where the effects are recorded.
#[derive(Debug)]
pub enum Effects {
    /// In the ledger's `E` lines.
    InLedger,
    /// Elsewhere (the inbox's effects table): one `(order, pid)` per effect.
    Listed(Vec<(String, u32)>),
}

/// The verdict of a run, from the ledger (and the effects).
#[derive(Debug, Default)]
pub struct Report {
    /// Effects of the run's orders.
    pub effects: usize,
    /// Effects beyond one per order.
    pub duplicate_effects: usize,
    /// Effects of killed consumers whose commit had not settled when they died (Redis mode).
    pub in_flight_at_kills: usize,
    /// Acks, while the store was down, of orders with no effect yet.
    pub acked_while_store_down: usize,
    /// Orders with no effect.
    pub missing: Vec<String>,
    /// Orders with more than one effect.
    pub duplicated: Vec<String>,
    /// Effects by consumer process id.
    pub by_process: HashMap<u32, usize>,
}

impl Report {
    /// Reads the ledger; `killed` are the consumer processes killed, `down` the store's
    /// outages (unix ms), `orders` the orders sent.
    pub fn read(
        ledger: &Path,
        killed: &HashSet<u32>,
        down: &[(u128, u128)],
        orders: &HashSet<String>,
        listed: &Effects,
    ) -> std::io::Result<Report> {
        let text = std::fs::read_to_string(ledger)?;
        let mut effects: HashMap<&str, usize> = HashMap::new();
        let mut unsettled: HashMap<(u32, &str), usize> = HashMap::new();
        let mut report = Report::default();
        if let Effects::Listed(rows) = listed {
            for (order, pid) in rows.iter().filter(|(o, _)| orders.contains(o)) {
                *effects.entry(order).or_default() += 1;
                *report.by_process.entry(*pid).or_default() += 1;
            }
        }
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let pid: u32 = parts.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let order = parts.get(2).copied().unwrap_or_default();
            if !orders.contains(order) {
                continue; // the warm-up message
            }
            match parts[0] {
                "E" => {
                    *effects.entry(order).or_default() += 1;
                    *report.by_process.entry(pid).or_default() += 1;
                    *unsettled.entry((pid, order)).or_default() += 1;
                }
                "C" if parts.get(3) != Some(&"failed") => {
                    if let Some(n) = unsettled.get_mut(&(pid, order)) {
                        *n = n.saturating_sub(1);
                    }
                }
                "A" => {
                    let at: u128 = parts.get(3).and_then(|t| t.parse().ok()).unwrap_or(0);
                    let in_outage = down.iter().any(|(from, to)| (*from..=*to).contains(&at));
                    if in_outage && !effects.contains_key(order) {
                        report.acked_while_store_down += 1;
                    }
                }
                _ => {}
            }
        }
        report.effects = effects.values().sum();
        report.duplicate_effects = effects.values().map(|n| n.saturating_sub(1)).sum();
        report.duplicated = effects
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(o, _)| o.to_string())
            .collect();
        report.in_flight_at_kills = unsettled
            .iter()
            .filter(|((pid, _), _)| killed.contains(pid))
            .map(|(_, n)| *n)
            .sum();
        report.missing = orders
            .iter()
            .filter(|o| !effects.contains_key(o.as_str()))
            .cloned()
            .collect();
        report.missing.sort();
        Ok(report)
    }
}
