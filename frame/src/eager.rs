//! Eager aggregation (Yan and Larson, "Eager Aggregation and Lazy
//! Aggregation", VLDB 1995): a group-by over inner joins whose aggregates
//! read one joined input `F` only is computed in part right where `F`
//! meets the input `P` it is joined with, grouped by the columns of `P`
//! that the other joins and the group keys use. The joins above then see
//! one row per group instead of one per row of `F`, and the group-by
//! merges those partial states (sums of sums, minima of minima, ...).
//!
//! TPC-H q10 sums `lineitem` revenue per customer over
//! `customer ⋈ orders ⋈ lineitem ⋈ nation`: `orders ⋈ lineitem`,
//! pre-aggregated by `o_custkey`, leaves one narrow row per customer (380K
//! at SF10) to join with `customer`, where the plan as written joins 1.1M
//! `lineitem` rows with seven wide customer columns and groups by them.
//!
//! The rewrite is always correct for decomposable aggregates; it is made
//! only where it should pay: the pre-aggregation groups by at most two
//! integer or date columns of `P` (so groups are no finer than `P`'s rows
//! and hash cheaply), and the other inputs `P` is joined with before `F`
//! are unfiltered scans, whose joins would not have removed rows of `P`.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_schema::DataType;

use crate::expr::{Expr, col};
use crate::groupby::{AggSpec, two_phase};
use crate::join::{JoinSpec, JoinType};
use crate::optimize::with_inputs;
use crate::plan::LogicalPlan;

/// Applies the rewrite to every group-by of `plan` where it pays.
pub fn eager_aggregation(plan: &Arc<LogicalPlan>) -> Arc<LogicalPlan> {
    let inputs = plan.inputs().into_iter().map(eager_aggregation).collect();
    let plan = Arc::new(with_inputs(plan, inputs));
    if let LogicalPlan::Aggregate {
        input,
        keys,
        aggs,
        split_out,
        partial_input: false,
    } = plan.as_ref()
        && let Some(rewritten) = rewrite(input, keys, aggs, *split_out)
    {
        return rewritten;
    }
    plan
}

/// The sides and spec of an inner join.
fn inner(plan: &LogicalPlan) -> Option<(&Arc<LogicalPlan>, &Arc<LogicalPlan>, &JoinSpec)> {
    match plan {
        LogicalPlan::Join { left, right, spec } if spec.how == JoinType::Inner => Some((left, right, spec)),
        _ => None,
    }
}

/// Nodes of a tree of inner joins.
type Nodes<'a> = Vec<&'a Arc<LogicalPlan>>;

/// The inner joins of the tree under `plan` (`plan` included) and its
/// leaves (every input that is not an inner join).
fn tree(plan: &Arc<LogicalPlan>) -> (Nodes<'_>, Nodes<'_>) {
    fn walk<'a>(plan: &'a Arc<LogicalPlan>, joins: &mut Nodes<'a>, leaves: &mut Nodes<'a>) {
        match inner(plan) {
            Some((left, right, _)) => {
                joins.push(plan);
                walk(left, joins, leaves);
                walk(right, joins, leaves);
            }
            None => leaves.push(plan),
        }
    }
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    walk(plan, &mut joins, &mut leaves);
    (joins, leaves)
}

/// `tree` with the node `target` replaced by `with` (searched through
/// inner joins only).
fn replace(tree: &Arc<LogicalPlan>, target: &Arc<LogicalPlan>, with: &Arc<LogicalPlan>) -> Arc<LogicalPlan> {
    if Arc::ptr_eq(tree, target) {
        return with.clone();
    }
    match inner(tree) {
        Some((left, right, _)) => Arc::new(with_inputs(
            tree,
            vec![replace(left, target, with), replace(right, target, with)],
        )),
        None => tree.clone(),
    }
}

fn names(plan: &LogicalPlan) -> Option<BTreeSet<String>> {
    Some(plan.schema().ok()?.fields().iter().map(|f| f.name().clone()).collect())
}

/// The group-by of `keys` and `aggs` over `input`, pre-aggregated below
/// one of its joins; `None` where the rewrite does not apply or would not
/// pay.
fn rewrite(
    input: &Arc<LogicalPlan>,
    keys: &[Expr],
    aggs: &[AggSpec],
    split_out: Option<usize>,
) -> Option<Arc<LogicalPlan>> {
    inner(input)?;
    let aggregated: BTreeSet<String> = aggs.iter().flat_map(|a| a.input.columns()).collect();
    if aggregated.is_empty() {
        return None;
    }
    let key_names: Vec<String> = keys.iter().map(Expr::output_name).collect();
    let phases = two_phase(&key_names, aggs)?;
    let (joins, leaves) = tree(input);
    // Leaves are told apart by identity: a frame joined with itself is left alone.
    if leaves
        .iter()
        .enumerate()
        .any(|(i, l)| leaves[..i].iter().any(|m| Arc::ptr_eq(l, m)))
    {
        return None;
    }
    // Columns keep their names through every join (no `_right` suffixes),
    // so a name means the same column before and after the rewrite.
    for join in &joins {
        let (left, right, spec) = inner(join)?;
        let left = names(left)?;
        if names(right)?
            .iter()
            .any(|c| !spec.right_on.contains(c) && left.contains(c))
        {
            return None;
        }
    }
    // The join of F, a leaf holding every aggregated column, with X, the
    // side its keys meet; whether F is its right side.
    let (j_f, spec, f, x, f_right) = joins.iter().find_map(|j| {
        let (left, right, spec) = inner(j)?;
        let holds =
            |side: &Arc<LogicalPlan>| inner(side).is_none() && names(side).is_some_and(|n| aggregated.is_subset(&n));
        if holds(right) {
            Some((*j, spec, right, left, true))
        } else if holds(left) {
            Some((*j, spec, left, right, false))
        } else {
            None
        }
    })?;
    let x_on = if f_right { &spec.left_on } else { &spec.right_on };
    if Arc::ptr_eq(j_f, input) {
        return None; // no join is left above the pre-aggregation
    }
    // P: the leaf of X holding those keys; X's other leaves must be
    // unfiltered scans.
    let (_, x_leaves) = tree(x);
    let p = *x_leaves
        .iter()
        .find(|l| names(l).is_some_and(|n| x_on.iter().all(|k| n.contains(k))))?;
    let unfiltered =
        |l: &&Arc<LogicalPlan>| matches!(l.as_ref(), LogicalPlan::Scan { filters, .. } if filters.is_empty());
    if !x_leaves.iter().filter(|l| !Arc::ptr_eq(l, p)).all(unfiltered) {
        return None;
    }
    // S = P ⋈ F, grouped by its columns used above it: the group keys and
    // the other joins' keys.
    let (left, right) = if f_right { (p, f) } else { (f, p) };
    let s = Arc::new(LogicalPlan::Join {
        left: left.clone(),
        right: right.clone(),
        spec: spec.clone(),
    });
    let mut used: BTreeSet<String> = keys.iter().flat_map(Expr::columns).collect();
    for j in joins.iter().filter(|j| !Arc::ptr_eq(j, j_f)) {
        let (_, _, spec) = inner(j)?;
        used.extend(spec.left_on.iter().chain(&spec.right_on).cloned());
    }
    let s_schema = s.schema().ok()?;
    let p_names = names(p)?;
    let group: Vec<String> = s_schema
        .fields()
        .iter()
        .filter(|f| used.contains(f.name()))
        .map(|f| f.name().clone())
        .collect();
    let narrow = |c: &String| {
        s_schema
            .field_with_name(c)
            .is_ok_and(|f| f.data_type().is_integer() || *f.data_type() == DataType::Date32)
    };
    if group.is_empty() || group.len() > 2 || !group.iter().all(|c| p_names.contains(c) && narrow(c)) {
        return None;
    }
    // The partial states' names must not meet a column of the other inputs.
    let others: BTreeSet<String> = leaves
        .iter()
        .filter(|l| !Arc::ptr_eq(l, p) && !Arc::ptr_eq(l, f))
        .filter_map(|l| names(l))
        .flatten()
        .collect();
    if phases
        .partial
        .iter()
        .any(|a| others.contains(&a.name) || group.contains(&a.name))
    {
        return None;
    }
    let pre = Arc::new(LogicalPlan::Aggregate {
        input: s,
        keys: group.iter().map(col).collect(),
        aggs: phases.partial,
        split_out: None,
        partial_input: false,
    });
    let joined = replace(input, j_f, &replace(x, p, &pre));
    let merged = Arc::new(LogicalPlan::Aggregate {
        input: joined,
        keys: keys.to_vec(),
        aggs: phases.merge,
        split_out,
        partial_input: false,
    });
    let plan = Arc::new(LogicalPlan::Select {
        input: merged,
        exprs: phases.finals,
    });
    plan.schema().ok()?;
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::lit;
    use crate::optimize::optimize;
    use crate::plan::Source;
    use arrow_schema::{Field, Schema};

    fn scan(cols: &[&str], filters: Vec<Expr>) -> Arc<LogicalPlan> {
        let fields: Vec<Field> = cols.iter().map(|c| Field::new(*c, DataType::Int64, true)).collect();
        Arc::new(LogicalPlan::Scan {
            source: Source::Random {
                rows: 10,
                parts: 1,
                keys: 2,
            },
            schema: Arc::new(Schema::new(fields)),
            projection: None,
            filters,
        })
    }

    fn join(left: Arc<LogicalPlan>, right: Arc<LogicalPlan>, l: &str, r: &str) -> Arc<LogicalPlan> {
        Arc::new(LogicalPlan::Join {
            left,
            right,
            spec: JoinSpec {
                left_on: vec![l.into()],
                right_on: vec![r.into()],
                how: JoinType::Inner,
                build_left: false,
            },
        })
    }

    /// TPC-H q10's shape: customers, their orders (filtered), the orders'
    /// lines, the customers' nations; `aggs` by customer and nation name.
    fn q10(customer_filters: Vec<Expr>, keys: &[&str], aggs: Vec<Expr>) -> Arc<LogicalPlan> {
        let c = scan(&["c_id", "c_name", "c_nation"], customer_filters);
        let o = scan(&["o_id", "o_cust", "o_day"], vec![col("o_day").gt(lit(3))]);
        let l = scan(&["l_order", "l_amount", "l_qty"], Vec::new());
        let n = scan(&["n_id", "n_name"], Vec::new());
        let joined = join(
            join(join(c, o, "c_id", "o_cust"), l, "o_id", "l_order"),
            n,
            "c_nation",
            "n_id",
        );
        Arc::new(LogicalPlan::Aggregate {
            input: joined,
            keys: keys.iter().map(|k| col(*k)).collect(),
            aggs: aggs.iter().map(|a| AggSpec::from_expr(a).unwrap()).collect(),
            split_out: None,
            partial_input: false,
        })
    }

    #[test]
    fn pre_aggregates_the_orders_lines_by_customer() {
        let plan = q10(
            Vec::new(),
            &["c_id", "c_name", "n_name"],
            vec![
                (col("l_amount") * lit(2)).sum().alias("total"),
                col("l_qty").mean().alias("avg_qty"),
                crate::expr::len().alias("n"),
            ],
        );
        let out = optimize(&plan).unwrap();
        let text = out.display_tree();
        // Means merge from sums and counts, so a select makes them last.
        assert!(text.starts_with("Select"), "{text}");
        assert!(
            text.contains("Aggregate by [col(o_cust)]: [Sum((col(l_amount) * 2)) as total, Sum(col(l_qty)) as avg_qty__sum, Count(col(l_qty)) as avg_qty__count, Len(") ,
            "{text}"
        );
        // Customers now meet the pre-aggregated orders, and nations come last.
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        let at = |p: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(p))
                .unwrap_or_else(|| panic!("{p}: {text}"))
        };
        assert!(
            at("Join Inner on [\"c_nation\"]") < at("Join Inner on [\"c_id\"]"),
            "{text}"
        );
        assert!(
            at("Join Inner on [\"c_id\"]") < at("Aggregate by [col(o_cust)]"),
            "{text}"
        );
        assert!(
            at("Aggregate by [col(o_cust)]") < at("Join Inner on [\"o_id\"]"),
            "{text}"
        );
        assert_eq!(out.schema().unwrap(), plan.schema().unwrap());
    }

    #[test]
    fn leaves_group_bys_alone_where_it_would_not_pay_or_hold() {
        let sum = || vec![col("l_amount").sum().alias("total")];
        let unchanged = |plan: Arc<LogicalPlan>| {
            let text = optimize(&plan).unwrap().display_tree();
            assert_eq!(text.matches("Aggregate").count(), 1, "{text}");
        };
        // A filter on customers could have removed most orders before the lines.
        unchanged(q10(vec![col("c_name").gt(lit(1))], &["c_id", "n_name"], sum()));
        // Grouped by a column of the lines: the groups are the lines.
        unchanged(q10(Vec::new(), &["l_qty"], sum()));
        // n_unique does not decompose.
        unchanged(q10(Vec::new(), &["c_id"], vec![col("l_amount").n_unique().alias("u")]));
        // Nothing joins above the lines' join.
        let top = Arc::new(LogicalPlan::Aggregate {
            input: join(
                scan(&["o_id", "o_cust"], Vec::new()),
                scan(&["l_order", "l_amount"], Vec::new()),
                "o_id",
                "l_order",
            ),
            keys: vec![col("o_cust")],
            aggs: sum().iter().map(|a| AggSpec::from_expr(a).unwrap()).collect(),
            split_out: None,
            partial_input: false,
        });
        unchanged(top);
    }
}
