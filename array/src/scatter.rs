//! Scattering host data: the chunks of a buffer the caller holds go from
//! the client straight into the workers' memory (the runtime's
//! `Client::scatter`, which spreads them by bytes held), not through task
//! arguments and the scheduler as [`crate::from_slice`]'s do. The array's
//! layer holds the futures, so the chunks stay on the workers while the
//! array (or one computed from it) lives.

use std::sync::Arc;

use weft_runtime::Client;

use crate::array::{Array, Held, Layer, unique_name};
use crate::block::{IntoBuf, encode};
use crate::chunks::{Chunks, strides};
use crate::create::copy_block;
use crate::dtype::Element;
use crate::error::{ArrayError, Result};

/// An array of `data` (C order, of `shape`) in chunks of `chunk`, each
/// chunk placed in a worker's memory now.
pub async fn scatter<T: Element>(client: &Client, data: &[T], shape: &[usize], chunk: &[usize]) -> Result<Array>
where
    Vec<T>: IntoBuf,
{
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(ArrayError::Shape {
            op: "scatter",
            left: vec![data.len()],
            right: shape.to_vec(),
        });
    }
    let chunks = Chunks::regular(shape, chunk)?;
    let full = strides(shape);
    let values = (0..chunks.nblocks())
        .map(|i| {
            let b = chunks.unravel(i);
            let bshape = chunks.block_shape(&b);
            let block = copy_block(data, &full, &bshape, &chunks.block_offset(&b));
            encode(vec![(bshape, block.into_buf())])
        })
        .collect::<Result<Vec<_>>>()?;
    let futures = client.scatter(values).await?;
    let layer = Arc::new(Layer {
        name: unique_name("scatter"),
        tasks: Vec::new(),
        deps: Vec::new(),
        keys: futures.iter().map(|f| f.key().clone()).collect(),
        held: Held(futures),
        shuffle: None,
    });
    Ok(Array::from_layer(layer, T::DTYPE, shape.to_vec(), chunks))
}
