//! Server-driven paging of the OData collections: a page holds at most
//! `limits.page_size` entities (10,000 by default, Defender's page), and an
//! answer cut short carries `@odata.nextLink`, the same query with `$skip`
//! (and `$top`, when one was asked for) moved on. `$top` keeps its OData
//! meaning: it bounds the whole answer over all pages, so a client paging
//! with `$top` and `$skip` itself gets no link past what it asked for.
//! This module only shapes queries and links; it never reads the store.

use crate::odata::{MAX_TOP, Query};

/// The page a query asks for, and how to tell whether another follows.
pub struct Page {
    size: u32,
    skip: u32,
    wanted: Option<u32>,
}

impl Page {
    /// Narrows `query` to one page, asking for one entity more than the
    /// page holds: if it comes back, another page follows.
    pub fn ask(query: &mut Query, page_size: u32) -> Page {
        let page_size = Self::bounded(page_size);
        let wanted = query.top;
        let size = wanted.map_or(page_size, |top| top.min(page_size));
        query.top = Some(size + 1);
        Page {
            size,
            skip: query.skip,
            wanted,
        }
    }

    /// The configured page size, within 1 and Defender's 10,000.
    pub fn bounded(page_size: u32) -> u32 {
        page_size.clamp(1, MAX_TOP)
    }

    /// Cuts `rows` to the page; returns the next page's link (for `url`,
    /// the collection's absolute URL, and the request's raw query) when
    /// entities were left out.
    pub fn finish<T>(
        &self,
        rows: &mut Vec<T>,
        url: &str,
        raw_query: Option<&str>,
    ) -> Option<String> {
        if rows.len() <= self.size as usize {
            return None;
        }
        rows.truncate(self.size as usize);
        let left = match self.wanted {
            Some(top) if top <= self.size => return None,
            Some(top) => Some(top - self.size),
            None => None,
        };
        let mut params: Vec<String> = raw_query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let key = p.split('=').next().unwrap_or_default();
                let key = percent_decoded(key);
                !key.eq_ignore_ascii_case("$skip") && !key.eq_ignore_ascii_case("$top")
            })
            .map(str::to_string)
            .collect();
        if let Some(left) = left {
            params.push(format!("$top={left}"));
        }
        params.push(format!("$skip={}", self.skip + self.size));
        Some(format!("{url}?{}", params.join("&")))
    }
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(text.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(raw: Option<&str>, page_size: u32, rows: usize) -> (usize, Option<String>) {
        let mut query = Query::parse(raw).unwrap();
        let page = Page::ask(&mut query, page_size);
        let mut rows: Vec<usize> = (0..rows.min(query.top.unwrap() as usize)).collect();
        let link = page.finish(&mut rows, "https://reach/api/machines", raw);
        (rows.len(), link)
    }

    #[test]
    fn a_full_page_links_to_the_rest() {
        assert_eq!(page(None, 10_000, 3), (3, None));
        assert_eq!(page(None, 2, 2), (2, None));
        assert_eq!(
            page(None, 2, 5),
            (2, Some("https://reach/api/machines?$skip=2".into()))
        );
        assert_eq!(
            page(Some("$filter=healthStatus+eq+'Active'&%24skip=4"), 2, 5),
            (
                2,
                Some("https://reach/api/machines?$filter=healthStatus+eq+'Active'&$skip=6".into())
            )
        );
    }

    #[test]
    fn top_bounds_the_whole_answer() {
        // Asked for 3 where a page holds 2: the link asks for the last one.
        assert_eq!(
            page(Some("$top=3"), 2, 5),
            (2, Some("https://reach/api/machines?$top=1&$skip=2".into()))
        );
        // Asked for 2 and got 2: nothing more was asked for.
        assert_eq!(page(Some("$top=2&$skip=1"), 10_000, 5), (2, None));
        assert_eq!(page(Some("$top=0"), 2, 5), (0, None));
    }
}
