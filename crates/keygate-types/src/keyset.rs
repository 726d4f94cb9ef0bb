//! [`KeySet`]: every key value the gateway accepts, packed for millions of keys.
//!
//! The gateway loads all keys at start and on every change, so their in-memory form decides its
//! memory and its time to ready: a million keys as individual records with their own `String`s
//! and `Vec`s cost ~1 KB each and tens of millions of allocations. A `KeySet` keeps one fixed-size
//! [`KeyRecord`] per accepted value, every key id in one string, and the lists of usage plans
//! interned (keys share a handful of plan combinations).

use std::collections::HashMap;

use crate::KeyDigest;

/// One accepted key value. A rotated key has two records (new value, and the old one until its
/// grace period ends) with the same id.
#[derive(Debug, Clone, Copy)]
pub struct KeyRecord {
    pub digest: KeyDigest,
    /// Unix seconds from which this value is refused (`i64::MAX`: never): the key's expiry, or
    /// the end of a rotation's grace period.
    pub expires: i64,
    id_start: u32,
    id_len: u16,
    pub enabled: bool,
    /// A value a rotation replaced, still in its grace period (its uses are recorded).
    pub old: bool,
    /// Index of the key's usage-plan list in [`KeySet::plan_sets`].
    pub plans: u32,
}

/// Key values with their ids, state and usage plans.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    records: Vec<KeyRecord>,
    ids: String,
    plan_sets: Vec<Vec<String>>,
    /// `plan_sets` by their sorted ids joined with newlines.
    plan_set_index: HashMap<String, u32>,
    scratch: String,
    /// The index of the empty plan list, once interned.
    no_plans: Option<u32>,
}

impl KeySet {
    pub fn with_capacity(records: usize, id_bytes: usize) -> Self {
        Self {
            records: Vec::with_capacity(records),
            ids: String::with_capacity(id_bytes),
            ..Self::default()
        }
    }

    /// Adds a key value. `plan_ids` is the key's usage plans (any order; duplicates ignored).
    ///
    /// # Panics
    /// When the ids of all keys exceed 4 GiB, or one id 64 KiB (ids are short generated strings).
    pub fn push(
        &mut self,
        id: &str,
        digest: KeyDigest,
        enabled: bool,
        expires: Option<i64>,
        plan_ids: &[&str],
    ) {
        let plans = self.intern(plan_ids);
        self.push_record(id, digest, enabled, expires, plans, false);
    }

    /// Replaces the usage plans of the record at `index` (for stores that read memberships
    /// separately).
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn set_plans(&mut self, index: usize, plan_ids: &[&str]) {
        let plans = self.intern(plan_ids);
        self.records[index].plans = plans;
    }

    /// Adds another value of a key already pushed (a rotated key's old value), sharing its plans.
    pub fn push_alias(&mut self, of: &KeyRecord, digest: KeyDigest, expires: Option<i64>) {
        let id = self.id(of).to_owned();
        self.push_record(&id, digest, of.enabled, expires, of.plans, true);
    }

    fn push_record(
        &mut self,
        id: &str,
        digest: KeyDigest,
        enabled: bool,
        expires: Option<i64>,
        plans: u32,
        old: bool,
    ) {
        let id_start = u32::try_from(self.ids.len()).expect("key ids exceed 4 GiB");
        let id_len = u16::try_from(id.len()).expect("a key id exceeds 64 KiB");
        self.ids.push_str(id);
        self.records.push(KeyRecord {
            digest,
            expires: expires.unwrap_or(i64::MAX),
            id_start,
            id_len,
            enabled,
            old,
            plans,
        });
    }

    /// The index of `plan_ids` as a set in `plan_sets`, added when new. Allocation-free when the
    /// set is known (the common case: millions of keys, a few plan combinations).
    fn intern(&mut self, plan_ids: &[&str]) -> u32 {
        if plan_ids.is_empty() {
            if let Some(i) = self.no_plans {
                return i;
            }
            let i = self.intern_sorted(&[]);
            self.no_plans = Some(i);
            return i;
        }
        let mut small = [""; 8];
        let mut large = Vec::new();
        let sorted: &mut [&str] = if plan_ids.len() <= small.len() {
            small[..plan_ids.len()].copy_from_slice(plan_ids);
            &mut small[..plan_ids.len()]
        } else {
            large.extend_from_slice(plan_ids);
            &mut large
        };
        sorted.sort_unstable();
        let mut n = 0;
        for i in 0..sorted.len() {
            if i == 0 || sorted[i] != sorted[n - 1] {
                sorted[n] = sorted[i];
                n += 1;
            }
        }
        self.intern_sorted(&sorted[..n])
    }

    /// `intern` for sorted, distinct ids.
    fn intern_sorted(&mut self, sorted: &[&str]) -> u32 {
        self.scratch.clear();
        for id in sorted {
            self.scratch.push_str(id);
            self.scratch.push('\n');
        }
        if let Some(&i) = self.plan_set_index.get(self.scratch.as_str()) {
            return i;
        }
        let i = u32::try_from(self.plan_sets.len()).expect("fewer than 2^32 plan combinations");
        self.plan_sets.push(sorted.iter().map(|p| (*p).to_owned()).collect());
        self.plan_set_index.insert(self.scratch.clone(), i);
        i
    }

    /// The id of the key a record belongs to.
    pub fn id(&self, r: &KeyRecord) -> &str {
        Self::id_in(&self.ids, r)
    }

    /// The id of a record in the id string taken from [`KeySet::into_parts`].
    pub fn id_in<'a>(ids: &'a str, r: &KeyRecord) -> &'a str {
        let start = r.id_start as usize;
        &ids[start..start + r.id_len as usize]
    }

    /// The usage plans (ids, sorted) of a record's key.
    pub fn plans(&self, r: &KeyRecord) -> &[String] {
        &self.plan_sets[r.plans as usize]
    }

    /// Every distinct list of usage plans, indexed by [`KeyRecord::plans`].
    pub fn plan_sets(&self) -> &[Vec<String>] {
        &self.plan_sets
    }

    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Moves the packed parts out: records, the id string they index, and the plan lists.
    pub fn into_parts(self) -> (Vec<KeyRecord>, String, Vec<Vec<String>>) {
        (self.records, self.ids, self.plan_sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_ids_and_interns_plan_lists() {
        let mut s = KeySet::default();
        s.push("k1", KeyDigest([1; 32]), true, None, &["p2", "p1"]);
        s.push("key-two", KeyDigest([2; 32]), false, Some(5), &["p1", "p2", "p1"]);
        s.push("k3", KeyDigest([3; 32]), true, None, &[]);
        let first = s.records()[0];
        s.push_alias(&first, KeyDigest([4; 32]), Some(9));
        let r = s.records();
        assert_eq!(r.len(), 4);
        assert_eq!(s.id(&r[1]), "key-two");
        assert_eq!(s.id(&r[3]), "k1");
        assert_eq!(r[0].plans, r[1].plans, "same plans, one list");
        assert_eq!(s.plans(&r[0]), ["p1", "p2"]);
        assert!(s.plans(&r[2]).is_empty());
        assert_eq!(r[0].expires, i64::MAX);
        assert_eq!((r[1].expires, r[1].enabled), (5, false));
        assert_eq!((r[3].expires, r[3].plans), (9, r[0].plans));
        assert_eq!(s.plan_sets().len(), 2);
    }
}
