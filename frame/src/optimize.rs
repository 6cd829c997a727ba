//! Optimizer passes over a [`LogicalPlan`], each small and tested apart:
//! [`fold_constants`], [`push_down_filters`] (which also combines filters
//! and moves them into scans, where they prune row groups),
//! [`crate::eager::eager_aggregation`] (group-bys computed in part below
//! joins) and [`push_down_projections`] (scans read only the columns used).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;

use crate::error::Result;
use crate::expr::{BinaryOp, Expr, Scalar};
use crate::join::JoinType;
use crate::plan::LogicalPlan;

/// Runs every pass, in order.
pub fn optimize(plan: &Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
    let plan = fold_constants(plan);
    let plan = push_down_filters(&plan, Vec::new())?;
    let plan = crate::eager::eager_aggregation(&plan);
    push_down_projections(&plan, None)
}

/// A node with its inputs replaced (in the order of [`LogicalPlan::inputs`]).
pub(crate) fn with_inputs(plan: &LogicalPlan, mut new: Vec<Arc<LogicalPlan>>) -> LogicalPlan {
    let mut next = || new.remove(0);
    match plan.clone() {
        LogicalPlan::Scan { .. } => plan.clone(),
        LogicalPlan::Filter { predicate, .. } => LogicalPlan::Filter {
            input: next(),
            predicate,
        },
        LogicalPlan::Select { exprs, .. } => LogicalPlan::Select { input: next(), exprs },
        LogicalPlan::WithColumns { exprs, .. } => LogicalPlan::WithColumns { input: next(), exprs },
        LogicalPlan::Aggregate {
            keys,
            aggs,
            split_out,
            partial_input,
            ..
        } => LogicalPlan::Aggregate {
            input: next(),
            keys,
            aggs,
            split_out,
            partial_input,
        },
        LogicalPlan::Join { spec, .. } => {
            let left = next();
            LogicalPlan::Join {
                left,
                right: next(),
                spec,
            }
        }
        LogicalPlan::Sort { by, descending, .. } => LogicalPlan::Sort {
            input: next(),
            by,
            descending,
        },
        LogicalPlan::Limit { n, .. } => LogicalPlan::Limit { input: next(), n },
        LogicalPlan::Distinct { .. } => LogicalPlan::Distinct { input: next() },
        LogicalPlan::Concat { .. } => LogicalPlan::Concat { inputs: new },
        LogicalPlan::Repartition { n, .. } => LogicalPlan::Repartition { input: next(), n },
        LogicalPlan::Shuffle { keys, n, .. } => LogicalPlan::Shuffle { input: next(), keys, n },
    }
}

/// Replaces subexpressions without columns (`lit(1) + lit(2)`) by their
/// value, and drops `and true` terms.
pub fn fold_expr(e: Expr) -> Expr {
    e.transform(&mut |e| {
        let foldable =
            !matches!(e, Expr::Literal(_) | Expr::Alias(..) | Expr::Agg(..)) && e.columns().is_empty() && !e.has_agg();
        if foldable && let Some(s) = evaluate_constant(&e) {
            return Expr::Literal(s);
        }
        match e {
            Expr::Binary {
                left,
                op: BinaryOp::And,
                right,
            } => match (*left, *right) {
                (Expr::Literal(Scalar::Boolean(true)), x) | (x, Expr::Literal(Scalar::Boolean(true))) => x,
                (l, r) => Expr::Binary {
                    left: Box::new(l),
                    op: BinaryOp::And,
                    right: Box::new(r),
                },
            },
            e => e,
        }
    })
}

fn evaluate_constant(e: &Expr) -> Option<Scalar> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(1));
    let batch = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options).ok()?;
    let a = crate::eval::evaluate(e, &batch).ok()?;
    if a.is_null(0) {
        return None;
    }
    use arrow_array::types::{Date32Type, Float64Type, Int64Type};
    use arrow_schema::DataType;
    Some(match a.data_type() {
        DataType::Boolean => Scalar::Boolean(a.as_boolean().value(0)),
        DataType::Int64 => Scalar::Int64(a.as_primitive::<Int64Type>().value(0)),
        DataType::Float64 => Scalar::Float64(a.as_primitive::<Float64Type>().value(0)),
        DataType::Date32 => Scalar::Date32(a.as_primitive::<Date32Type>().value(0)),
        DataType::Utf8 => Scalar::Utf8(a.as_string::<i32>().value(0).to_string()),
        _ => return None,
    })
}

fn map_exprs(plan: &LogicalPlan, f: &impl Fn(Expr) -> Expr) -> LogicalPlan {
    let all = |v: &[Expr]| v.iter().cloned().map(f).collect::<Vec<_>>();
    match plan.clone() {
        LogicalPlan::Filter { input, predicate } => LogicalPlan::Filter {
            input,
            predicate: f(predicate),
        },
        LogicalPlan::Select { input, exprs } => LogicalPlan::Select {
            input,
            exprs: all(&exprs),
        },
        LogicalPlan::WithColumns { input, exprs } => LogicalPlan::WithColumns {
            input,
            exprs: all(&exprs),
        },
        LogicalPlan::Aggregate {
            input,
            keys,
            mut aggs,
            split_out,
            partial_input,
        } => {
            for a in &mut aggs {
                a.input = f(a.input.clone());
            }
            LogicalPlan::Aggregate {
                input,
                keys: all(&keys),
                aggs,
                split_out,
                partial_input,
            }
        }
        other => other,
    }
}

/// Constant folding in every expression of the plan.
pub fn fold_constants(plan: &Arc<LogicalPlan>) -> Arc<LogicalPlan> {
    let inputs = plan.inputs().into_iter().map(fold_constants).collect();
    Arc::new(map_exprs(&with_inputs(plan, inputs), &fold_expr))
}

/// Columns passed through unchanged by a select or with_columns.
fn passthrough(plan: &LogicalPlan) -> Option<BTreeSet<String>> {
    match plan {
        LogicalPlan::Select { exprs, .. } => Some(
            exprs
                .iter()
                .filter_map(|e| match e {
                    Expr::Column(c) => Some(c.clone()),
                    _ => None,
                })
                .collect(),
        ),
        LogicalPlan::WithColumns { input, exprs } => {
            let replaced: BTreeSet<String> = exprs.iter().map(Expr::output_name).collect();
            let schema = input.schema().ok()?;
            Some(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| !replaced.contains(n))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn names(schema: &Schema) -> BTreeSet<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn wrap(plan: Arc<LogicalPlan>, filters: Vec<Expr>) -> Arc<LogicalPlan> {
    match Expr::conjunction(filters) {
        Some(predicate) => Arc::new(LogicalPlan::Filter { input: plan, predicate }),
        None => plan,
    }
}

/// Moves filter conjuncts (`pending`, from the filters above) as far down
/// as they stay correct: through selects and with_columns of the columns
/// they read, into the side of a join whose columns they read, below
/// sorts, group-bys (conditions on keys only) and into scans. Adjacent
/// filters end up combined in one.
pub fn push_down_filters(plan: &Arc<LogicalPlan>, mut pending: Vec<Expr>) -> Result<Arc<LogicalPlan>> {
    match plan.as_ref() {
        LogicalPlan::Filter { input, predicate } => {
            pending.extend(predicate.clone().conjuncts());
            push_down_filters(input, pending)
        }
        LogicalPlan::Scan {
            source,
            schema,
            projection,
            filters,
        } => {
            let mut filters = filters.clone();
            for p in pending {
                if !filters.contains(&p) {
                    filters.push(p);
                }
            }
            Ok(Arc::new(LogicalPlan::Scan {
                source: source.clone(),
                schema: schema.clone(),
                projection: projection.clone(),
                filters,
            }))
        }
        LogicalPlan::Select { input, .. } | LogicalPlan::WithColumns { input, .. } => {
            let through = passthrough(plan).unwrap_or_default();
            let (down, keep): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.columns().is_subset(&through));
            let input = push_down_filters(input, down)?;
            Ok(wrap(Arc::new(with_inputs(plan, vec![input])), keep))
        }
        LogicalPlan::Sort { input, .. }
        | LogicalPlan::Shuffle { input, .. }
        | LogicalPlan::Repartition { input, .. } => {
            let input = push_down_filters(input, pending)?;
            Ok(Arc::new(with_inputs(plan, vec![input])))
        }
        LogicalPlan::Concat { inputs } => {
            let inputs = inputs
                .iter()
                .map(|i| push_down_filters(i, pending.clone()))
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(LogicalPlan::Concat { inputs }))
        }
        LogicalPlan::Aggregate { input, keys, .. } => {
            let key_names: BTreeSet<String> = keys
                .iter()
                .filter_map(|k| match k {
                    Expr::Column(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            let (down, keep): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.columns().is_subset(&key_names));
            let input = push_down_filters(input, down)?;
            Ok(wrap(Arc::new(with_inputs(plan, vec![input])), keep))
        }
        LogicalPlan::Join { left, right, spec } => {
            let (ls, rs) = (names(left.schema()?.as_ref()), names(right.schema()?.as_ref()));
            let out = names(plan.schema()?.as_ref());
            let (mut to_left, mut to_right, mut keep) = (Vec::new(), Vec::new(), Vec::new());
            for p in pending {
                let cols = p.columns();
                if cols.is_subset(&ls) {
                    to_left.push(p);
                } else if spec.how == JoinType::Inner
                    && cols.is_subset(&rs)
                    && cols.iter().all(|c| out.contains(c) && !ls.contains(c))
                {
                    to_right.push(p);
                } else {
                    keep.push(p);
                }
            }
            let left = push_down_filters(left, to_left)?;
            let right = push_down_filters(right, to_right)?;
            Ok(wrap(Arc::new(with_inputs(plan, vec![left, right])), keep))
        }
        LogicalPlan::Limit { .. } | LogicalPlan::Distinct { .. } => {
            let inputs = plan
                .inputs()
                .into_iter()
                .map(|i| push_down_filters(i, Vec::new()))
                .collect::<Result<Vec<_>>>()?;
            Ok(wrap(Arc::new(with_inputs(plan, inputs)), pending))
        }
    }
}

fn union(a: &BTreeSet<String>, exprs: &[Expr]) -> BTreeSet<String> {
    let mut out = a.clone();
    for e in exprs {
        out.extend(e.columns());
    }
    out
}

/// Narrows scans to the columns the plan above them uses. `required`:
/// the columns the parent reads (`None`: all).
pub fn push_down_projections(plan: &Arc<LogicalPlan>, required: Option<BTreeSet<String>>) -> Result<Arc<LogicalPlan>> {
    let all_of = |p: &Arc<LogicalPlan>| -> Result<BTreeSet<String>> { Ok(names(p.schema()?.as_ref())) };
    let new_inputs: Vec<Arc<LogicalPlan>> = match plan.as_ref() {
        LogicalPlan::Scan {
            source,
            schema,
            projection,
            filters,
        } => {
            let Some(required) = required else {
                return Ok(plan.clone());
            };
            let keep: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| required.contains(n) && projection.as_ref().is_none_or(|p| p.contains(n)))
                .collect();
            return Ok(Arc::new(LogicalPlan::Scan {
                source: source.clone(),
                schema: schema.clone(),
                projection: Some(keep),
                filters: filters.clone(),
            }));
        }
        LogicalPlan::Filter { input, predicate } => {
            let req = required.map(|r| union(&r, std::slice::from_ref(predicate)));
            vec![push_down_projections(input, req)?]
        }
        LogicalPlan::Select { input, exprs } => {
            vec![push_down_projections(input, Some(union(&BTreeSet::new(), exprs)))?]
        }
        LogicalPlan::WithColumns { input, exprs } => {
            let req = match required {
                None => None,
                Some(r) => {
                    let produced: BTreeSet<String> = exprs.iter().map(Expr::output_name).collect();
                    let mut need: BTreeSet<String> = r.difference(&produced).cloned().collect();
                    need = union(&need, exprs);
                    // with_columns keeps every input column: only those needed above.
                    Some(need)
                }
            };
            vec![push_down_projections(input, req)?]
        }
        LogicalPlan::Aggregate { input, keys, aggs, .. } => {
            let inputs: Vec<Expr> = aggs.iter().map(|a| a.input.clone()).collect();
            let req = union(&union(&BTreeSet::new(), keys), &inputs);
            vec![push_down_projections(input, Some(req))?]
        }
        LogicalPlan::Join { left, right, spec } => match required {
            None => vec![push_down_projections(left, None)?, push_down_projections(right, None)?],
            Some(r) => {
                let (ls, rs) = (all_of(left)?, all_of(right)?);
                let mut rreq: BTreeSet<String> = spec.right_on.iter().cloned().collect();
                for c in &rs {
                    if r.contains(c) || r.contains(&format!("{c}_right")) {
                        rreq.insert(c.clone());
                    }
                }
                let mut lreq: BTreeSet<String> = spec.left_on.iter().cloned().collect();
                for c in &ls {
                    // A left column that renames a kept right column stays, so the names do not change.
                    if r.contains(c) || (rreq.contains(c) && !spec.right_on.contains(c)) {
                        lreq.insert(c.clone());
                    }
                }
                vec![
                    push_down_projections(left, Some(lreq))?,
                    push_down_projections(right, Some(rreq))?,
                ]
            }
        },
        LogicalPlan::Sort { input, by, .. } => {
            vec![push_down_projections(input, required.map(|r| union(&r, by)))?]
        }
        LogicalPlan::Shuffle { input, keys, .. } => {
            vec![push_down_projections(input, required.map(|r| union(&r, keys)))?]
        }
        LogicalPlan::Limit { input, .. } | LogicalPlan::Repartition { input, .. } => {
            vec![push_down_projections(input, required)?]
        }
        LogicalPlan::Distinct { input } => vec![push_down_projections(input, None)?],
        LogicalPlan::Concat { inputs } => inputs
            .iter()
            .map(|i| push_down_projections(i, required.clone()))
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(Arc::new(with_inputs(plan, new_inputs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{col, lit};
    use crate::plan::Source;
    use arrow_schema::{DataType, Field};

    fn scan(cols: &[&str]) -> Arc<LogicalPlan> {
        let schema = Arc::new(Schema::new(
            cols.iter()
                .map(|c| Field::new(*c, DataType::Int64, true))
                .collect::<Vec<_>>(),
        ));
        Arc::new(LogicalPlan::Scan {
            source: Source::Random {
                rows: 10,
                parts: 1,
                keys: 2,
            },
            schema,
            projection: None,
            filters: Vec::new(),
        })
    }

    #[test]
    fn constants_fold() {
        assert_eq!(fold_expr(lit(1) + lit(2)), lit(3i64));
        assert_eq!(fold_expr(col("a").gt(lit(1) + lit(1))), col("a").gt(lit(2i64)));
        assert_eq!(fold_expr(col("a").gt(lit(1)).and(lit(true))), col("a").gt(lit(1)));
        let d = crate::expr::lit_date("1998-12-01").unwrap();
        assert_eq!(fold_expr(d.clone()), d);
    }

    #[test]
    fn filters_combine_and_reach_the_scan() {
        let plan = Arc::new(LogicalPlan::Filter {
            input: Arc::new(LogicalPlan::Filter {
                input: Arc::new(LogicalPlan::Select {
                    input: scan(&["a", "b", "c"]),
                    exprs: vec![col("a"), (col("b") + lit(1)).alias("b1")],
                }),
                predicate: col("a").gt(lit(1)),
            }),
            predicate: col("b1").lt(lit(5)).and(col("a").lt(lit(9))),
        });
        let out = optimize(&plan).unwrap();
        // The condition on b1 stays above the select; both on a are in the scan.
        let LogicalPlan::Filter { input, predicate } = out.as_ref() else {
            panic!("{}", out.display_tree())
        };
        assert_eq!(predicate, &col("b1").lt(lit(5)));
        let LogicalPlan::Select { input, .. } = input.as_ref() else {
            panic!()
        };
        let LogicalPlan::Scan {
            filters, projection, ..
        } = input.as_ref()
        else {
            panic!()
        };
        assert_eq!(filters, &[col("a").lt(lit(9)), col("a").gt(lit(1))]);
        assert_eq!(projection.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        assert_eq!(out.schema().unwrap(), plan.schema().unwrap());
    }

    #[test]
    fn filters_split_across_a_join() {
        let spec = crate::join::JoinSpec {
            left_on: vec!["a".into()],
            right_on: vec!["x".into()],
            how: JoinType::Inner,
            build_left: false,
        };
        let plan = Arc::new(LogicalPlan::Filter {
            input: Arc::new(LogicalPlan::Join {
                left: scan(&["a", "b"]),
                right: scan(&["x", "y"]),
                spec,
            }),
            predicate: col("b").gt(lit(1)).and(col("y").lt(lit(2))).and(col("b").lt(col("y"))),
        });
        let out = optimize(&plan).unwrap();
        let text = out.display_tree();
        assert!(text.starts_with("Filter (col(b) < col(y))"), "{text}");
        assert!(text.contains("filters [(col(b) > 1)]"), "{text}");
        assert!(text.contains("filters [(col(y) < 2)]"), "{text}");
    }
}
