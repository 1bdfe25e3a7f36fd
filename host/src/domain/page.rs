//! Pagination of list endpoints: `page` ≥ 1 (default 1), `per_page` 1–100 (default 10).

use super::{DomainError, Errors};

pub const DEFAULT_PER_PAGE: u32 = 10;
pub const MAX_PER_PAGE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub page: u64,
    pub per_page: u32,
}

impl PageRequest {
    /// Parses the raw query values; anything out of range or not a number is a 422.
    pub fn parse(page: Option<&str>, per_page: Option<&str>) -> Result<Self, DomainError> {
        let mut errors = Errors::default();
        // Any page number is valid; one past the end is an empty page.
        let page = page.map_or(Ok(1), |raw| parse_bounded(raw, 1, u64::MAX));
        let per_page = per_page.map_or(Ok(u64::from(DEFAULT_PER_PAGE)), |raw| {
            parse_bounded(raw, 1, u64::from(MAX_PER_PAGE))
        });
        let page = errors.check("page", page);
        let per_page = errors.check("per_page", per_page);
        errors.into_result()?;
        Ok(Self {
            page: page.unwrap_or(1),
            per_page: per_page.map_or(DEFAULT_PER_PAGE, |n| n as u32),
        })
    }

    /// Rows to skip, saturating at what SQL's OFFSET accepts.
    pub fn offset(self) -> i64 {
        let rows = (self.page - 1).saturating_mul(u64::from(self.per_page));
        i64::try_from(rows).unwrap_or(i64::MAX)
    }

    pub fn total_pages(self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.per_page))
    }
}

fn parse_bounded(raw: &str, min: u64, max: u64) -> Result<u64, String> {
    raw.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be an integer between {min} and {max} (got {raw:?})"))
}

/// One page of results with the total across all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_edges() {
        assert_eq!(
            PageRequest::parse(None, None).unwrap(),
            PageRequest { page: 1, per_page: 10 }
        );
        assert_eq!(PageRequest::parse(Some("3"), Some("100")).unwrap().offset(), 200);
        for (page, per_page) in [
            ("0", "10"),
            ("1", "0"),
            ("1", "101"),
            ("-1", "10"),
            ("x", "10"),
            ("1", ""),
        ] {
            assert!(
                PageRequest::parse(Some(page), Some(per_page)).is_err(),
                "{page} {per_page}"
            );
        }
    }

    #[test]
    fn total_pages_rounds_up() {
        let p = PageRequest { page: 1, per_page: 10 };
        assert_eq!(p.total_pages(0), 0);
        assert_eq!(p.total_pages(10), 1);
        assert_eq!(p.total_pages(11), 2);
    }
}
