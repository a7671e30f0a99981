//! The `$filter` parser: text to tokens, tokens to an `Expr` by recursive
//! descent (the grammar is in `odata`), bounded in depth (`MAX_DEPTH`),
//! terms (`MAX_TERMS`) and `in` list length (`MAX_IN_VALUES`), so that no
//! filter a client writes costs more than a bounded amount to parse or run.

use super::*;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    /// A number or date-time, kept raw until its use is known.
    Raw(String),
    Open,
    Close,
    Comma,
    Slash,
    Colon,
}

fn tokenize(text: &str) -> Result<Vec<Token>, ODataError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '/' => {
                tokens.push(Token::Slash);
                i += 1;
            }
            ':' => {
                tokens.push(Token::Colon);
                i += 1;
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return err("Unterminated string literal in $filter"),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Text(value));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], ':' | '.' | '-' | '+'))
                {
                    i += 1;
                }
                tokens.push(Token::Raw(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return err(format!("Unexpected character '{other}' in $filter")),
        }
    }
    Ok(tokens)
}

/// Parses a `$filter` expression.
pub fn parse_filter(text: &str) -> Result<Expr, ODataError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return err("$filter is empty");
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        terms: 0,
    };
    let expr = parser.or(0)?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => err(format!(
            "Unexpected {} in $filter; expected 'and', 'or' or the end",
            describe(token)
        )),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("'{w}'"),
        Token::Text(t) => format!("string '{t}'"),
        Token::Raw(r) => format!("'{r}'"),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Comma => "','".into(),
        Token::Slash => "'/'".into(),
        Token::Colon => "':'".into(),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Comparisons and functions read so far.
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), ODataError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => err(format!(
                "Expected {what} in $filter, found {}",
                describe(&t)
            )),
            None => err(format!("Expected {what} in $filter, found the end")),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ODataError> {
        let mut left = self.and(depth)?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ODataError> {
        let mut left = self.unary(depth)?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ODataError> {
        if depth > MAX_DEPTH {
            return err(format!("$filter is nested deeper than {MAX_DEPTH} levels"));
        }
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or(depth + 1)?;
                self.expect(Token::Close, "')'")?;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return err(format!(
                        "$filter has more than {MAX_TERMS} comparisons; list many values with 'in (...)'"
                    ));
                }
                let func = match word.to_ascii_lowercase().as_str() {
                    "startswith" => Some(TextFunc::StartsWith),
                    "endswith" => Some(TextFunc::EndsWith),
                    "contains" => Some(TextFunc::Contains),
                    _ => None,
                };
                match func {
                    Some(func) if self.peek() == Some(&Token::Open) => self.func(func, &word),
                    _ => self.compare(word),
                }
            }
            Some(token) => err(format!(
                "Expected a property name in $filter, found {}",
                describe(&token)
            )),
            None => err("Expected a property name in $filter, found the end"),
        }
    }

    fn func(&mut self, func: TextFunc, name: &str) -> Result<Expr, ODataError> {
        self.expect(Token::Open, "'('")?;
        let field = self.field(&format!("the first argument of {name}"))?;
        self.expect(Token::Comma, "','")?;
        let value = self.literal()?;
        self.expect(Token::Close, "')'")?;
        Ok(Expr::Func { func, field, value })
    }

    fn field(&mut self, what: &str) -> Result<String, ODataError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            Some(t) => err(format!(
                "Expected a property name as {what}, found {}",
                describe(&t)
            )),
            None => err(format!("Expected a property name as {what}, found the end")),
        }
    }

    fn compare(&mut self, field: String) -> Result<Expr, ODataError> {
        if self.peek() == Some(&Token::Slash) {
            return self.any(field);
        }
        let op_word = match self.next() {
            Some(Token::Word(w)) => w,
            Some(t) => {
                return err(format!(
                    "Expected an operator after '{field}' in $filter, found {}",
                    describe(&t)
                ));
            }
            None => return err(format!("Expected an operator after '{field}' in $filter")),
        };
        let op = match op_word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            "in" => return self.in_list(field),
            _ => {
                return err(format!(
                    "Unknown operator '{op_word}' in $filter; use eq, ne, gt, ge, lt, le or in"
                ));
            }
        };
        let value = self.literal()?;
        Ok(Expr::Compare { field, op, value })
    }

    fn in_list(&mut self, field: String) -> Result<Expr, ODataError> {
        self.expect(Token::Open, "'(' after 'in'")?;
        let mut values = vec![self.literal()?];
        loop {
            match self.next() {
                Some(Token::Comma) => {
                    if values.len() == MAX_IN_VALUES {
                        return err(format!(
                            "An 'in' list in $filter holds at most {MAX_IN_VALUES} values"
                        ));
                    }
                    values.push(self.literal()?)
                }
                Some(Token::Close) => break,
                Some(t) => {
                    return err(format!(
                        "Expected ',' or ')' in 'in' list, found {}",
                        describe(&t)
                    ));
                }
                None => return err("Unterminated 'in' list in $filter"),
            }
        }
        Ok(Expr::In { field, values })
    }

    fn any(&mut self, field: String) -> Result<Expr, ODataError> {
        self.expect(Token::Slash, "'/'")?;
        match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("any") => {}
            _ => return err(format!("Only '{field}/any(x: x eq value)' is supported")),
        }
        self.expect(Token::Open, "'('")?;
        let var = self.field("the lambda variable")?;
        self.expect(Token::Colon, "':'")?;
        let used = self.field("the lambda body")?;
        if used != var {
            return err(format!("The lambda body must use its variable '{var}'"));
        }
        match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("eq") => {}
            _ => return err(format!("Only '{field}/any(x: x eq value)' is supported")),
        }
        let value = self.literal()?;
        self.expect(Token::Close, "')'")?;
        Ok(Expr::AnyEq { field, value })
    }

    fn literal(&mut self) -> Result<Literal, ODataError> {
        match self.next() {
            Some(Token::Text(t)) => Ok(Literal::Text(t)),
            Some(Token::Raw(raw)) => {
                if let Ok(n) = raw.parse::<i64>() {
                    Ok(Literal::Int(n))
                } else if let Some(t) = Micros::parse(&raw) {
                    Ok(Literal::DateTime(t))
                } else {
                    err(format!("'{raw}' is neither a number nor a date-time"))
                }
            }
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "null" => Ok(Literal::Null),
                "true" => Ok(Literal::Bool(true)),
                "false" => Ok(Literal::Bool(false)),
                _ => err(format!(
                    "Expected a value in $filter, found '{w}' (quote text values: '{w}')"
                )),
            },
            Some(t) => err(format!(
                "Expected a value in $filter, found {}",
                describe(&t)
            )),
            None => err("Expected a value in $filter, found the end"),
        }
    }
}
