//! A worker's broadcast join sides, concatenated and indexed once: every
//! partition of the probe side that runs on the worker reads the same
//! build inputs, so the first task keeps their concatenation and hash
//! table here and the others probe it.
//!
//! An entry holds its inputs weakly and lives only while the worker's store
//! keeps them: entries whose inputs were released are dropped at the next
//! frame task, and at most [`KEPT`] entries are kept.

use std::sync::{Arc, Mutex, Weak};

use arrow_array::{BooleanArray, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_schema::DataType;
use weft_runtime::Value;

use crate::error::Result;
use crate::join::IntIndex;

/// Build sides kept at most.
pub const KEPT: usize = 4;

/// A build side: its inputs' concatenation and its table.
pub struct Built {
    /// The inputs, concatenated.
    pub batch: RecordBatch,
    /// The table over its key, when it is one integer or date column.
    pub index: Option<IntIndex>,
}

/// A runtime join filter: the probe rows a build side can match, tested
/// while the probe side is scanned (as Polars and DuckDB do), so that the
/// scan decodes the other columns of those rows only. TPC-H q3, q5 and
/// q10 keep 1-5% of `lineitem` this way, where their filters keep 25-100%.
#[derive(Clone)]
pub struct KeyFilter {
    /// The probe side's key columns.
    pub columns: Vec<String>,
    built: Arc<Built>,
}

impl KeyFilter {
    /// The filter of `built` on the probe side's key columns `columns`,
    /// when the build side's keys are integers or dates in a table.
    pub fn new(built: &Arc<Built>, columns: &[String]) -> Option<KeyFilter> {
        built.index.as_ref().map(|_| KeyFilter {
            columns: columns.to_vec(),
            built: built.clone(),
        })
    }

    /// Which rows of `batch` (holding the key columns) have keys the build
    /// side holds, among the rows `among` keeps (all when `None`).
    pub fn keeps(&self, batch: &RecordBatch, among: Option<&BooleanBuffer>) -> Result<BooleanArray> {
        let index = self.built.index.as_ref().expect("a key filter has a table");
        let keys = crate::join::key_columns(batch, &self.columns)?
            .iter()
            .map(|k| arrow_cast::cast(k, &DataType::Int64))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(BooleanArray::new(index.holds(&keys, among), None))
    }
}

struct Entry {
    inputs: Vec<Weak<Value>>,
    key: Vec<String>,
    built: Arc<Built>,
}

impl Entry {
    fn live(&self) -> bool {
        self.inputs.iter().all(|w| w.strong_count() > 0)
    }

    fn is_for(&self, inputs: &[Arc<Value>], key: &[String]) -> bool {
        self.key == key
            && self.inputs.len() == inputs.len()
            && self
                .inputs
                .iter()
                .zip(inputs)
                .all(|(w, a)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(a)))
    }
}

static KEEP: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // A panic elsewhere while holding the lock leaves the entries whole.
    let mut entries = KEEP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    entries.retain(Entry::live);
    entries
}

/// Drops the entries whose inputs were released.
pub fn forget_released() {
    drop(kept());
}

/// The build side over `inputs` joined on `key`: kept from an earlier task
/// (pointer-equal live inputs; a live input's address cannot be reused),
/// or made with `concat` and indexed now, then kept.
pub fn build_side(
    inputs: &[Arc<Value>],
    key: &[String],
    concat: impl FnOnce(&[Arc<Value>]) -> Result<RecordBatch>,
) -> Result<Arc<Built>> {
    if let Some(e) = kept().iter().find(|e| e.is_for(inputs, key)) {
        return Ok(e.built.clone());
    }
    let batch = concat(inputs)?;
    let index = IntIndex::build(&batch, key)?;
    let built = Arc::new(Built { batch, index });
    let mut entries = kept();
    if entries.len() >= KEPT {
        entries.remove(0);
    }
    entries.push(Entry {
        inputs: inputs.iter().map(Arc::downgrade).collect(),
        key: key.to_vec(),
        built: built.clone(),
    });
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::{JoinSpec, JoinType, hash_join, join_schema};
    use arrow_array::{Int32Array, Int64Array};
    use arrow_schema::{DataType, Field, Schema};

    fn side(keys: Vec<i32>) -> Arc<Value> {
        let schema = Schema::new(vec![Field::new("k", DataType::Int32, false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int32Array::from(keys))]).unwrap();
        Arc::new(crate::partition::encode(&[batch]).unwrap())
    }

    fn concat(inputs: &[Arc<Value>]) -> Result<RecordBatch> {
        let batches: Vec<RecordBatch> = inputs
            .iter()
            .flat_map(|v| crate::partition::decode(v).unwrap())
            .collect();
        Ok(arrow_select::concat::concat_batches(&batches[0].schema(), &batches)?)
    }

    #[test]
    fn a_build_side_is_made_once_while_its_inputs_live() {
        let key = vec!["k".to_string()];
        let inputs = vec![side(vec![1, 2, 2]), side(vec![3])];
        let first = build_side(&inputs, &key, concat).unwrap();
        assert_eq!(first.batch.num_rows(), 4);
        assert!(first.index.is_some(), "an int32 key is indexed");
        let again = build_side(&inputs, &key, |_| panic!("not made twice")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let other_key = build_side(&inputs, &["x".to_string()], concat).unwrap();
        assert!(!Arc::ptr_eq(&first, &other_key) && other_key.index.is_none());

        // Its inputs released, it is forgotten.
        drop(inputs);
        forget_released();
        assert!(kept().iter().all(|e| !Arc::ptr_eq(&e.built, &first)));
    }

    #[test]
    fn a_kept_index_joins_as_a_fresh_table_does() {
        let key = vec!["k".to_string()];
        let inputs = vec![side(vec![1, 2, 2, 5])];
        let built = build_side(&inputs, &key, concat).unwrap();
        let probe_schema = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let probe = RecordBatch::try_new(
            Arc::new(probe_schema),
            vec![Arc::new(Int64Array::from(vec![Some(2), None, Some(5), Some(7)]))],
        )
        .unwrap();
        let spec = JoinSpec {
            left_on: key.clone(),
            right_on: key.clone(),
            how: JoinType::Inner,
            build_left: false,
        };
        let schema = Arc::new(join_schema(probe.schema_ref(), built.batch.schema_ref(), &spec).unwrap());
        let fresh = hash_join(&probe, &built.batch, &spec, schema.clone(), None).unwrap();
        let kept = hash_join(&probe, &built.batch, &spec, schema, built.index.as_ref()).unwrap();
        assert_eq!(fresh, kept);
        assert_eq!(kept.num_rows(), 3);
    }
}
