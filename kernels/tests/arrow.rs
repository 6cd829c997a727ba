//! Host columns and arrow arrays share their buffers: no copies either way.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use weft_kernels::{Buffer, Column, DType};

fn host_ptr(d: &Buffer) -> *const u8 {
    d.as_host().expect("a host column").as_ptr()
}

#[test]
fn primitive_round_trip_shares_buffers() {
    let arr = Int64Array::from(vec![Some(1), None, Some(3), Some(-4)]);
    let col = Column::from_arrow(&arr).unwrap();
    assert_eq!(col.dtype(), DType::I64);
    assert_eq!(host_ptr(col.values()), arr.values().inner().as_ptr());
    assert_eq!(col.null_count().unwrap(), 1);
    let back = col.to_arrow().unwrap();
    assert_eq!(back.as_ref(), &arr as &dyn Array);
    let back = back.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(back.values().inner().as_ptr(), arr.values().inner().as_ptr());

    // A slice starts mid-buffer; the column points into the same memory.
    let sliced = arr.slice(1, 3);
    let col = Column::from_arrow(&sliced).unwrap();
    assert_eq!(col.len(), 3);
    assert_eq!(host_ptr(col.values()), arr.values().inner().as_ptr().wrapping_add(8));
    assert_eq!(col.to_arrow().unwrap().as_ref(), &sliced as &dyn Array);
}

#[test]
fn other_types_round_trip() {
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![Some(7), None])),
        Arc::new(Float64Array::from(vec![1.5, -2.0, f64::INFINITY])),
        Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)])),
        Arc::new(StringArray::from(vec![Some("weft"), None, Some(""), Some("grid")])),
        Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).slice(3, 5)),
    ];
    for arr in arrays {
        let col = Column::from_arrow(arr.as_ref()).unwrap();
        assert_eq!(col.to_arrow().unwrap().as_ref(), arr.as_ref(), "{arr:?}");
    }
    let strings = StringArray::from(vec!["ab", "cde"]);
    let col = Column::from_arrow(&strings).unwrap();
    assert_eq!(host_ptr(col.values()), strings.values().as_ptr());
}

#[test]
fn device_columns_refuse_host_views_and_come_back_intact() {
    let gpu = weft_gpu::Gpu::emulated(0, 1 << 20, true);
    let arr = StringArray::from(vec![Some("x"), None, Some("yz")]);
    let col = Column::from_arrow(&arr).unwrap().to_device(&gpu).unwrap();
    assert!(col.to_arrow().is_err());
    assert!(col.to_device(&gpu).is_err());
    assert_eq!(col.to_host().unwrap().to_arrow().unwrap().as_ref(), &arr as &dyn Array);
}
