//! How many ledgers to ask `getLedgers` for, sized by bytes rather than by count.
//!
//! Ledger sizes vary by three orders of magnitude (a quiet testnet ledger is a few KB, a
//! busy pubnet ledger 1-3 MB of XDR, a third more as base64), so a fixed count either
//! crawls or asks for answers no client should buffer. [`PageSizer`] keeps an estimate of
//! the bytes a ledger takes on the wire and asks for as many ledgers as fit the page
//! budget. What must hold:
//!
//! - the estimate starts pessimistic (a large pubnet ledger), rises at once to any larger
//!   ledger seen, and falls back slowly;
//! - an answer over the response cap halves the page and raises the estimate, and the page
//!   grows back by doubling once answers fit again;
//! - a page is never below one ledger or above `max_ledgers`.

/// The byte budgets of the RPC source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBudget {
    /// Target size of one `getLedgers` answer, in bytes.
    pub page_bytes: usize,
    /// Largest answer accepted at all, in bytes (the HTTP client's cap).
    pub max_response_bytes: u32,
    /// Most ledgers per page (Stellar RPC's maximum is 200).
    pub max_ledgers: usize,
    /// Fetched pages held in memory before they are committed, in bytes: bounds the
    /// prefetch depth.
    pub in_flight_bytes: usize,
}

/// 1 MiB.
pub const MIB: usize = 1 << 20;

impl Default for PageBudget {
    fn default() -> Self {
        Self {
            page_bytes: 16 * MIB,
            max_response_bytes: 64 * MIB as u32,
            max_ledgers: 200,
            in_flight_bytes: 64 * MIB,
        }
    }
}

impl PageBudget {
    /// The same budget made consistent: a page fits in the response cap and in the
    /// in-flight budget, and `max_ledgers` is within 1..=200.
    pub fn sanitized(mut self) -> Self {
        self.max_response_bytes = self.max_response_bytes.max(64 * 1024);
        self.page_bytes = self
            .page_bytes
            .clamp(4096, self.max_response_bytes as usize);
        self.in_flight_bytes = self.in_flight_bytes.max(self.page_bytes);
        self.max_ledgers = self.max_ledgers.clamp(1, 200);
        self
    }
}

/// The first guess of a ledger's size on the wire: a large pubnet ledger (3 MB of XDR as
/// base64), so the first page never overshoots.
const INITIAL_LEDGER_BYTES: f64 = 4.0 * MIB as f64;

/// Adaptive page size.
#[derive(Clone, Debug)]
pub struct PageSizer {
    budget: PageBudget,
    /// Estimated bytes per ledger on the wire.
    ledger_bytes: f64,
    /// Upper bound after an oversized answer; doubles back up on each answer that fits.
    ceiling: usize,
    /// Whether `ledger_bytes` comes from an answer yet (the first one replaces the guess).
    measured: bool,
}

/// What to do after an oversized answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shrunk {
    /// Ask again for this many ledgers.
    To(usize),
    /// A single ledger is already over the cap: only a larger cap helps.
    SingleLedgerTooLarge,
}

impl PageSizer {
    /// A sizer for `budget` (sanitised).
    pub fn new(budget: PageBudget) -> Self {
        let budget = budget.sanitized();
        Self {
            budget,
            ledger_bytes: INITIAL_LEDGER_BYTES,
            ceiling: budget.max_ledgers,
            measured: false,
        }
    }

    /// The budget in force.
    pub fn budget(&self) -> PageBudget {
        self.budget
    }

    /// The estimated bytes of one ledger on the wire.
    pub fn ledger_bytes(&self) -> usize {
        self.ledger_bytes as usize
    }

    /// Ledgers to ask for next.
    pub fn limit(&self) -> usize {
        let fit = (self.budget.page_bytes as f64 / self.ledger_bytes.max(1.0)).floor() as usize;
        fit.clamp(1, self.budget.max_ledgers)
            .min(self.ceiling.max(1))
    }

    /// Records an answer of `ledgers` ledgers taking `bytes` on the wire.
    pub fn answered(&mut self, ledgers: usize, bytes: usize) {
        if ledgers == 0 {
            return;
        }
        let per = bytes as f64 / ledgers as f64;
        self.ledger_bytes = if per >= self.ledger_bytes || !self.measured {
            per
        } else {
            0.7 * self.ledger_bytes + 0.3 * per
        };
        self.measured = true;
        self.ceiling = self.ceiling.saturating_mul(2).min(self.budget.max_ledgers);
    }

    /// Records that asking for `asked` ledgers gave an answer over the cap.
    pub fn too_large(&mut self, asked: usize) -> Shrunk {
        if asked <= 1 {
            self.ceiling = 1;
            self.ledger_bytes = self
                .ledger_bytes
                .max(f64::from(self.budget.max_response_bytes));
            self.measured = true;
            return Shrunk::SingleLedgerTooLarge;
        }
        // `asked` ledgers took more than the cap: each took more than cap / asked.
        let floor = f64::from(self.budget.max_response_bytes) / asked as f64;
        self.ledger_bytes = self.ledger_bytes.max(floor);
        self.measured = true;
        self.ceiling = (asked / 2).max(1);
        Shrunk::To(self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(page_mib: usize, cap_mib: usize) -> PageBudget {
        PageBudget {
            page_bytes: page_mib * MIB,
            max_response_bytes: (cap_mib * MIB) as u32,
            max_ledgers: 200,
            in_flight_bytes: 4 * page_mib * MIB,
        }
    }

    #[test]
    fn starts_small_and_grows_to_what_fits() {
        let mut sizer = PageSizer::new(budget(16, 64));
        assert_eq!(sizer.limit(), 4, "pessimistic first page");
        // Pubnet-sized ledgers: 2 MB each on the wire.
        sizer.answered(4, 8 * MIB);
        assert_eq!(sizer.limit(), 8);
        // Tiny ledgers: the estimate falls back slowly, then the page is capped at 200.
        for _ in 0..40 {
            let limit = sizer.limit();
            sizer.answered(limit, limit * 10_000);
        }
        assert_eq!(sizer.limit(), 200);
        // One large ledger among them raises the estimate at once.
        sizer.answered(1, 3 * MIB);
        assert_eq!(sizer.limit(), 5);
    }

    #[test]
    fn shrinks_on_an_oversized_answer_and_grows_back() {
        // A budget larger than the cap: the sizer overshoots and must back off.
        let mut sizer = PageSizer::new(PageBudget {
            page_bytes: 64 * MIB,
            max_response_bytes: (64 * MIB) as u32,
            max_ledgers: 200,
            in_flight_bytes: 64 * MIB,
        });
        sizer.answered(10, 10 * 100_000);
        let asked = sizer.limit();
        assert_eq!(asked, 200);
        assert_eq!(sizer.too_large(asked), Shrunk::To(100));
        assert_eq!(sizer.too_large(100), Shrunk::To(50));
        // Answers that fit let it double back up to what the estimate allows.
        sizer.answered(50, 50 * 300_000);
        assert_eq!(sizer.limit(), 100);
        sizer.answered(100, 100 * 300_000);
        assert!(sizer.limit() > 100);
        assert_eq!(sizer.too_large(1), Shrunk::SingleLedgerTooLarge);
        assert_eq!(sizer.limit(), 1);
    }

    #[test]
    fn budgets_are_made_consistent() {
        let b = PageBudget {
            page_bytes: 100 * MIB,
            max_response_bytes: (8 * MIB) as u32,
            max_ledgers: 1000,
            in_flight_bytes: 0,
        }
        .sanitized();
        assert_eq!(b.page_bytes, 8 * MIB);
        assert_eq!(b.in_flight_bytes, 8 * MIB);
        assert_eq!(b.max_ledgers, 200);
    }
}
