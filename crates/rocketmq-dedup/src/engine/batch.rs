//! A batch grouped by record key: one [`Entry`] per distinct key (its first message leads,
//! copies follow), one per message that runs without dedup, and the state of each.

use std::collections::HashMap;

use rocketmq_model::common::message::message_ext::MessageExt;
use tokio::sync::watch;

use crate::record_key::RecordKey;
use crate::stats::Decision;

/// How a message is to be deduplicated, as derived from its key.
#[derive(Debug)]
pub(crate) enum MessageKey {
    /// Under this record key.
    Record(RecordKey),
    /// Not at all: the handler runs without dedup.
    NoDedup,
    /// Not processed: the key could not be derived and the fallback is to retry.
    Rejected,
}

/// Where an entry stands.
#[derive(Debug)]
pub(crate) enum EntryState {
    /// To be processed by the next pass.
    Pending,
    /// Another batch of this listener holds the key; the receiver sees it let go.
    Waiting(watch::Receiver<bool>),
    /// Processed.
    Done(Decision),
}

/// One record key of the batch (or one message without dedup), led by its first message.
#[derive(Debug)]
pub(crate) struct Entry {
    /// `None`: a message processed without dedup.
    pub(crate) key: Option<RecordKey>,
    /// The index of the first message with this key: the one whose handler runs.
    pub(crate) leader: usize,
    pub(crate) state: EntryState,
}

/// Where a message of the batch went.
#[derive(Debug, Clone, Copy)]
enum Assignment {
    /// To this entry (as its leader or a copy).
    Entry(usize),
    /// Nowhere: its key was rejected.
    Rejected,
}

/// The messages of one listener call, grouped.
#[derive(Debug)]
pub(crate) struct Batch<'b> {
    msgs: &'b [&'b MessageExt],
    /// Per message: its entry, or rejected.
    assignments: Vec<Assignment>,
    /// In the order of their first message.
    pub(crate) entries: Vec<Entry>,
}

impl<'b> Batch<'b> {
    /// Groups `msgs` by the record key `keyed` derives for each.
    pub(crate) fn plan(
        msgs: &'b [&'b MessageExt],
        mut keyed: impl FnMut(&MessageExt) -> MessageKey,
    ) -> Self {
        let mut assignments = Vec::with_capacity(msgs.len());
        let mut entries: Vec<Entry> = Vec::with_capacity(msgs.len());
        let mut by_key: HashMap<RecordKey, usize> = HashMap::new();
        for (i, msg) in msgs.iter().enumerate() {
            let new_entry = |key| Entry {
                key,
                leader: i,
                state: EntryState::Pending,
            };
            let assignment = match keyed(msg) {
                MessageKey::Rejected => Assignment::Rejected,
                MessageKey::NoDedup => {
                    entries.push(new_entry(None));
                    Assignment::Entry(entries.len() - 1)
                }
                MessageKey::Record(key) => match by_key.get(&key) {
                    Some(&e) => Assignment::Entry(e),
                    None => {
                        by_key.insert(key.clone(), entries.len());
                        entries.push(new_entry(Some(key)));
                        Assignment::Entry(entries.len() - 1)
                    }
                },
            };
            assignments.push(assignment);
        }
        Batch {
            msgs,
            assignments,
            entries,
        }
    }

    /// The number of messages.
    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    /// The message at `index`.
    pub(crate) fn msg(&self, index: usize) -> &'b MessageExt {
        self.msgs[index]
    }

    /// Whether any entry waits for another batch of this listener.
    pub(crate) fn has_waiting(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, EntryState::Waiting(_)))
    }

    /// Takes the waiting entries' signals, leaving them waiting.
    pub(crate) fn waiting_signals(&self) -> Vec<watch::Receiver<bool>> {
        self.entries
            .iter()
            .filter_map(|e| match &e.state {
                EntryState::Waiting(done) => Some(done.clone()),
                _ => None,
            })
            .collect()
    }

    /// Makes the waiting entries pending again (their holders let go).
    pub(crate) fn retry_waiting(&mut self) {
        for entry in &mut self.entries {
            if matches!(entry.state, EntryState::Waiting(_)) {
                entry.state = EntryState::Pending;
            }
        }
    }

    /// One decision per message, in order: a key's first message by its outcome, copies
    /// following it; entries still waiting are deferred.
    pub(crate) fn decisions(&self) -> Vec<Decision> {
        self.assignments
            .iter()
            .enumerate()
            .map(|(i, assignment)| match *assignment {
                Assignment::Rejected => Decision::KeyRejected,
                Assignment::Entry(e) => {
                    let entry = &self.entries[e];
                    match &entry.state {
                        EntryState::Done(outcome) if entry.leader == i => *outcome,
                        EntryState::Done(outcome) => outcome.for_copy(),
                        EntryState::Pending | EntryState::Waiting(_) => Decision::DeferredInFlight,
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_key::KeyParts;
    use crate::testing::message;

    fn keyed(msg: &MessageExt) -> MessageKey {
        match msg.property("UNIQ_KEY") {
            Some("bad") => MessageKey::Rejected,
            Some("free") => MessageKey::NoDedup,
            Some(k) => MessageKey::Record(RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: "t",
                tag: None,
                key: k,
            })),
            None => MessageKey::Rejected,
        }
    }

    #[test]
    fn copies_share_an_entry_and_follow_its_first_message() {
        let msgs: Vec<MessageExt> = ["a", "b", "a", "bad", "free", "free"]
            .iter()
            .map(|k| message("t").uniq_key(k).build())
            .collect();
        let refs: Vec<&MessageExt> = msgs.iter().collect();
        let mut batch = Batch::plan(&refs, keyed);
        assert_eq!(
            batch.entries.len(),
            4,
            "a, b and two messages without dedup"
        );
        assert_eq!(batch.entries[0].leader, 0);
        batch.entries[0].state = EntryState::Done(Decision::Processed);
        batch.entries[1].state = EntryState::Done(Decision::HandlerFailed);
        batch.entries[2].state = EntryState::Done(Decision::ProcessedWithoutDedup);
        assert_eq!(
            batch.decisions(),
            [
                Decision::Processed,
                Decision::HandlerFailed,
                Decision::Duplicate,
                Decision::KeyRejected,
                Decision::ProcessedWithoutDedup,
                Decision::DeferredInFlight,
            ]
        );
    }
}
