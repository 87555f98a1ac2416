//! Lists as RabbitMQ's management API returns them: filtered by `name` (a substring,
//! or a regular expression with `use_regex=true`), sorted by `sort` (a field, dotted
//! for nested ones: `message_stats.publish`) and `sort_reverse`, cut to `columns`,
//! and paged with `page` and `page_size` (then wrapped with the counts).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// RabbitMQ's largest page.
pub const MAX_PAGE_SIZE: usize = 500;
/// RabbitMQ's default page size.
const DEFAULT_PAGE_SIZE: usize = 100;

/// A list request's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    /// The page to return (from 1); without it, the whole list.
    pub page: Option<String>,
    /// Items per page.
    pub page_size: Option<String>,
    /// Only items whose name contains (or matches) this.
    pub name: Option<String>,
    /// `name` is a regular expression.
    pub use_regex: Option<String>,
    /// The field to sort by.
    pub sort: Option<String>,
    /// Sort descending.
    pub sort_reverse: Option<String>,
    /// Only these fields, comma-separated.
    pub columns: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s == "true" || s == "1")
}

/// How a list is to be cut, checked.
pub struct Plan {
    page: Option<(usize, usize)>,
    name: Option<NameFilter>,
    sort: Option<Vec<String>>,
    reverse: bool,
    columns: Option<Vec<Vec<String>>>,
}

enum NameFilter {
    Contains(String),
    Matches(regex::Regex),
}

impl NameFilter {
    fn keeps(&self, name: &str) -> bool {
        match self {
            NameFilter::Contains(s) => name.contains(s.as_str()),
            NameFilter::Matches(re) => re.is_match(name),
        }
    }
}

fn number(what: &str, v: &str) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a number from 1, not '{v}'")))
}

impl ListQuery {
    /// The query checked: bad numbers and bad regular expressions are a 400.
    pub fn plan(&self) -> Result<Plan, ApiError> {
        let page = match &self.page {
            None => None,
            Some(p) => {
                let page = number("page", p)?;
                let size = match &self.page_size {
                    None => DEFAULT_PAGE_SIZE,
                    Some(s) => number("page_size", s)?,
                };
                if size > MAX_PAGE_SIZE {
                    return Err(ApiError::bad_request(format!(
                        "page_size must be at most {MAX_PAGE_SIZE}, not {size}"
                    )));
                }
                Some((page, size))
            }
        };
        let name = match self.name.as_deref().filter(|n| !n.is_empty()) {
            None => None,
            Some(n) if truthy(&self.use_regex) => {
                Some(NameFilter::Matches(regex::Regex::new(n).map_err(|e| {
                    ApiError::bad_request(format!("name is not a regular expression: {e}"))
                })?))
            }
            Some(n) => Some(NameFilter::Contains(n.to_string())),
        };
        let path = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        Ok(Plan {
            page,
            name,
            sort: self.sort.as_deref().filter(|s| !s.is_empty()).map(path),
            reverse: truthy(&self.sort_reverse),
            columns: self
                .columns
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| c.split(',').map(|s| path(s.trim())).collect()),
        })
    }
}

fn field<'a>(item: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(item, |v, key| v.get(key))
}

/// Orders JSON values: numbers by value, strings by text, absent first.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

impl Plan {
    /// Whether only names decide which items are shown and in what order: then a
    /// caller may cut the list by name before it computes the items' statistics.
    pub fn by_name_only(&self) -> bool {
        self.sort
            .as_ref()
            .is_none_or(|s| s.len() == 1 && s[0] == "name")
    }

    /// Whether the item called `name` passes the name filter.
    pub fn keeps(&self, name: &str) -> bool {
        self.name.as_ref().is_none_or(|f| f.keeps(name))
    }

    /// The range of a `total`-long list sorted by name that the page shows, and
    /// whether the list is reversed (for callers that cut by name first).
    pub fn page_range(&self, total: usize) -> (std::ops::Range<usize>, bool) {
        match self.page {
            None => (0..total, self.reverse),
            Some((page, size)) => {
                let start = (page - 1).saturating_mul(size).min(total);
                (start..start.saturating_add(size).min(total), self.reverse)
            }
        }
    }

    /// Applies the plan to the whole list `items` (`total` items before any filter
    /// outside this plan, such as visibility).
    pub fn apply(&self, mut items: Vec<Value>) -> Value {
        let total = items.len();
        if let Some(filter) = &self.name {
            items.retain(|item| {
                item.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| filter.keeps(n))
            });
        }
        if let Some(path) = &self.sort {
            items.sort_by(|a, b| compare(field(a, path), field(b, path)));
        }
        if self.reverse {
            items.reverse();
        }
        let filtered = items.len();
        let page = self.page.map(|(page, size)| {
            let start = (page - 1).saturating_mul(size).min(filtered);
            items = items.split_off(start);
            items.truncate(size);
            (page, size)
        });
        let items = self.cut_columns(items);
        match page {
            None => Value::Array(items),
            Some((page, size)) => Self::wrap(items, page, size, filtered, total),
        }
    }

    /// A page of items cut elsewhere (by name), wrapped with the counts.
    pub fn wrap_page(&self, items: Vec<Value>, filtered: usize, total: usize) -> Value {
        let items = self.cut_columns(items);
        match self.page {
            None => Value::Array(items),
            Some((page, size)) => Self::wrap(items, page, size, filtered, total),
        }
    }

    fn wrap(items: Vec<Value>, page: usize, size: usize, filtered: usize, total: usize) -> Value {
        json!({
            "filtered_count": filtered,
            "item_count": items.len(),
            "items": items,
            "page": page,
            "page_count": filtered.div_ceil(size).max(1),
            "page_size": size,
            "total_count": total,
        })
    }

    fn cut_columns(&self, items: Vec<Value>) -> Vec<Value> {
        let Some(columns) = &self.columns else {
            return items;
        };
        items
            .into_iter()
            .map(|item| {
                let mut out = Map::new();
                for path in columns {
                    if let Some(v) = field(&item, path) {
                        // A nested column keeps its nesting.
                        let mut at = &mut out;
                        for key in &path[..path.len() - 1] {
                            at = at
                                .entry(key.clone())
                                .or_insert_with(|| Value::Object(Map::new()))
                                .as_object_mut()
                                .expect("made an object");
                        }
                        at.insert(path[path.len() - 1].clone(), v.clone());
                    }
                }
                Value::Object(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        let mut q = ListQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "page" => q.page = v,
                "page_size" => q.page_size = v,
                "name" => q.name = v,
                "use_regex" => q.use_regex = v,
                "sort" => q.sort = v,
                "sort_reverse" => q.sort_reverse = v,
                "columns" => q.columns = v,
                _ => unreachable!(),
            }
        }
        q
    }

    fn items() -> Vec<Value> {
        (0..25)
            .map(|i| json!({"name": format!("q{i:02}"), "messages": 25 - i, "stats": {"rate": i % 5}}))
            .collect()
    }

    #[test]
    fn pages_sort_and_filter_as_rabbitmq() {
        let plan = query(&[("page", "2"), ("page_size", "10"), ("sort", "messages")])
            .plan()
            .unwrap();
        let page = plan.apply(items());
        assert_eq!(page["total_count"], 25);
        assert_eq!(page["page_count"], 3);
        assert_eq!(page["item_count"], 10);
        assert_eq!(page["items"][0]["messages"], 11);

        let filtered = query(&[("name", "q1"), ("page", "1")])
            .plan()
            .unwrap()
            .apply(items());
        assert_eq!(filtered["filtered_count"], 10);
        assert_eq!(filtered["total_count"], 25);

        let regex = query(&[("name", "^q0[0-2]$"), ("use_regex", "true")])
            .plan()
            .unwrap()
            .apply(items());
        assert_eq!(regex.as_array().unwrap().len(), 3);

        let reversed = query(&[
            ("sort", "stats.rate"),
            ("sort_reverse", "true"),
            ("columns", "name,stats.rate"),
        ])
        .plan()
        .unwrap()
        .apply(items());
        assert_eq!(reversed[0]["stats"]["rate"], 4);
        assert!(reversed[0].get("messages").is_none(), "cut to the columns");

        let beyond = query(&[("page", "9")]).plan().unwrap().apply(items());
        assert_eq!(beyond["item_count"], 0);
        let far = query(&[("page", "18446744073709551615"), ("page_size", "500")]);
        assert_eq!(
            far.plan().unwrap().apply(items())["item_count"],
            0,
            "no overflow"
        );
    }

    #[test]
    fn bad_queries_are_refused() {
        for bad in [
            query(&[("page", "0")]),
            query(&[("page", "x")]),
            query(&[("page", "1"), ("page_size", "501")]),
            query(&[("name", "("), ("use_regex", "true")]),
        ] {
            assert!(bad.plan().is_err());
        }
    }
}
