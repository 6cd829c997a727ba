//! Computing a graph in this process, without a cluster: the tasks run in
//! dependency order through the same registry the workers use. For tests,
//! small arrays and checking a plan before sending it.

use std::collections::HashMap;
use std::sync::Arc;

use weft_runtime::ops::{OpContext, Site};
use weft_runtime::{Key, Registry, Value};

use crate::array::{Array, HostArray};
use crate::error::{ArrayError, Result};

impl Array {
    /// Computes the array here, with the ops of `registry` (see
    /// [`crate::registry`]), and gathers it.
    pub fn compute_local(&self, registry: &Registry) -> Result<HostArray> {
        self.compute_on(registry, &Site::default())
    }

    /// Computes the array here as a worker of `site` would (on its GPU,
    /// when it has one), and gathers it.
    pub fn compute_on(&self, registry: &Registry, site: &Site) -> Result<HostArray> {
        let graph = self.local_graph()?;
        let specs: HashMap<&Key, &weft_runtime::TaskSpec> = graph.tasks.iter().map(|t| (&t.key, t)).collect();
        let mut done: HashMap<Key, Arc<Value>> = HashMap::new();
        for output in &graph.outputs {
            // Depth first without recursion: (key, inputs visited).
            let mut stack = vec![(output.clone(), false)];
            while let Some((key, ready)) = stack.pop() {
                if done.contains_key(&key) {
                    continue;
                }
                let spec = specs
                    .get(&key)
                    .ok_or_else(|| ArrayError::Data(format!("the graph lacks the task {key}")))?;
                if !ready {
                    stack.push((key.clone(), true));
                    stack.extend(
                        spec.deps
                            .iter()
                            .filter(|d| !done.contains_key(*d))
                            .map(|d| (d.clone(), false)),
                    );
                    continue;
                }
                let op = registry
                    .get(&spec.op)
                    .ok_or_else(|| ArrayError::Data(format!("no op {} in the registry", spec.op)))?;
                let inputs: Vec<Arc<Value>> = spec.deps.iter().filter_map(|d| done.get(d).cloned()).collect();
                if inputs.len() != spec.deps.len() {
                    return Err(ArrayError::Data(format!("the inputs of {key} are missing (a cycle?)")));
                }
                let ctx = OpContext::new(site, &key);
                let value = op(&ctx, &spec.args, &inputs).map_err(|e| ArrayError::Data(format!("{key}: {e}")))?;
                done.insert(key, Arc::new(value));
            }
        }
        let values: Vec<Value> = graph
            .outputs
            .iter()
            .map(|k| done.get(k).map(|v| (**v).clone()))
            .collect::<Option<_>>()
            .ok_or_else(|| ArrayError::Data("an output was not computed".into()))?;
        self.assemble(&values)
    }
}
