//! Joining arrays: `concatenate` relabels its inputs' chunks as one grid
//! (no task, no copy); `stack` adds an axis to each and concatenates.

use std::sync::Arc;

use crate::array::{Array, Layer, unique_name};
use crate::chunks::Chunks;
use crate::error::{ArrayError, Result};

/// The arrays joined along `axis`; their other axes must agree in length
/// and chunks. Types are promoted to a common one.
pub fn concatenate(arrays: &[&Array], axis: isize) -> Result<Array> {
    let first = arrays
        .first()
        .ok_or_else(|| ArrayError::Invalid("concatenate: no arrays".into()))?;
    let ax = first.axis(axis, "concatenate")?;
    let dtype = arrays.iter().fold(first.dtype, |d, a| d.promote(a.dtype));
    for a in arrays {
        let same = a.ndim() == first.ndim()
            && a.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(k, (x, y))| k == ax || x == y);
        if !same {
            return Err(ArrayError::Shape {
                op: "concatenate",
                left: first.shape.clone(),
                right: a.shape.clone(),
            });
        }
        for k in (0..a.ndim()).filter(|&k| k != ax) {
            if a.chunks.axis(k) != first.chunks.axis(k) {
                return Err(ArrayError::Chunks {
                    op: "concatenate",
                    left: first.chunks.axis(k).to_vec(),
                    right: a.chunks.axis(k).to_vec(),
                });
            }
        }
    }
    let parts: Vec<Array> = arrays
        .iter()
        .map(|a| {
            if a.dtype == dtype {
                (*a).clone()
            } else {
                a.astype(dtype)
            }
        })
        .collect();
    let layers: Vec<Arc<Layer>> = parts.iter().map(Array::layer).collect();
    let mut lens = Vec::new();
    // (part, block along the axis) of each output block along the axis.
    let mut owner = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        for (k, &len) in part.chunks.axis(ax).iter().enumerate() {
            if len > 0 || parts.len() == 1 {
                lens.push(len);
                owner.push((p, k));
            }
        }
    }
    if lens.is_empty() {
        lens.push(0);
        owner.push((0, 0));
    }
    let mut chunks = first.chunks.0.clone();
    chunks[ax] = lens;
    let chunks = Chunks(chunks);
    let keys = (0..chunks.nblocks())
        .map(|i| {
            let mut b = chunks.unravel(i);
            let (p, k) = owner[b[ax]];
            b[ax] = k;
            layers[p].key(parts[p].chunks.ravel(&b))
        })
        .collect();
    let mut shape = first.shape.clone();
    shape[ax] = parts.iter().map(|a| a.shape[ax]).sum();
    let layer = Arc::new(Layer {
        name: unique_name("concatenate"),
        tasks: Vec::new(),
        deps: layers,
        keys,
        held: Default::default(),
        shuffle: None,
    });
    Ok(Array::from_layer(layer, dtype, shape, chunks))
}

/// The arrays, of one shape, stacked along a new axis `axis`.
pub fn stack(arrays: &[&Array], axis: isize) -> Result<Array> {
    let expanded: Vec<Array> = arrays.iter().map(|a| a.expand_dims(axis)).collect::<Result<_>>()?;
    concatenate(&expanded.iter().collect::<Vec<_>>(), axis)
}
