//! Host capacity accounting: what a host offers, what its VMs use, and what accepted creates
//! hold until they end. Plain data and checked arithmetic, no I/O.
//!
//! Every number here comes from outside (a hypervisor's reply, a request), so no sum may wrap or
//! panic: a reservation that does not fit, or whose counter would overflow, is refused and leaves
//! the counters as they were. Saturation is used only where it is provably the safe answer:
//! "in use" past the integer range means "full", and "free" never goes below zero.

use crate::{Error, ErrorKind, Resources, Result};

/// One host's capacity and what is taken of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Capacity {
    /// vCPUs the host offers.
    pub(crate) vcpus_total: u32,
    /// Memory the host offers, in MiB.
    pub(crate) memory_total: u64,
    /// vCPUs its VMs use, as last observed (plus creates that succeeded since).
    pub(crate) vcpus_used: u32,
    /// Memory its VMs use, in MiB.
    pub(crate) memory_used: u64,
    /// vCPUs held for creates accepted and not yet ended.
    pub(crate) vcpus_reserved: u32,
    /// Memory held for creates accepted and not yet ended, in MiB.
    pub(crate) memory_reserved: u64,
    /// VMs on the host, as last observed (plus creates that succeeded and deletes that ended
    /// since), so a host's VM count moves with its `used` figures.
    pub(crate) vm_count: usize,
}

impl Capacity {
    /// Returns the vCPUs and memory in use or reserved. Saturates: a sum past the integer range
    /// means the host is full, never that it has room.
    pub(crate) fn taken(&self) -> (u32, u64) {
        (
            self.vcpus_used.saturating_add(self.vcpus_reserved),
            self.memory_used.saturating_add(self.memory_reserved),
        )
    }

    /// Returns the vCPUs and memory free; zero on an overcommitted host.
    pub(crate) fn free(&self) -> (u32, u64) {
        let (vcpus, memory) = self.taken();
        (
            self.vcpus_total.saturating_sub(vcpus),
            self.memory_total.saturating_sub(memory),
        )
    }

    /// Returns true when `r` fits in what is free.
    pub(crate) fn fits(&self, r: &Resources) -> bool {
        let (vcpus, memory) = self.free();
        r.vcpus <= vcpus && r.memory_mib <= memory
    }

    /// Holds `r` for a create.
    ///
    /// # Errors
    /// [`ErrorKind::QuotaExceeded`] when `r` does not fit (another create took the room first)
    /// or a counter would overflow; the counters are then unchanged.
    pub(crate) fn reserve(&mut self, r: &Resources) -> Result<()> {
        let no_room = || {
            Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "the chosen host no longer has {} vCPUs and {} MiB of memory free; retry",
                    r.vcpus, r.memory_mib
                ),
            )
            .with_context("capacity", "exhausted")
            .with_code(crate::CODE_CAPACITY_EXHAUSTED)
            .temporary()
        };
        if !self.fits(r) {
            return Err(no_room());
        }
        let vcpus = self
            .vcpus_reserved
            .checked_add(r.vcpus)
            .ok_or_else(no_room)?;
        let memory = self
            .memory_reserved
            .checked_add(r.memory_mib)
            .ok_or_else(no_room)?;
        self.vcpus_reserved = vcpus;
        self.memory_reserved = memory;
        Ok(())
    }

    /// Gives back what [`Capacity::reserve`] held. Never below zero: a refresh may already have
    /// counted the VM as used and dropped nothing it should keep.
    pub(crate) fn release(&mut self, r: &Resources) {
        self.vcpus_reserved = self.vcpus_reserved.saturating_sub(r.vcpus);
        self.memory_reserved = self.memory_reserved.saturating_sub(r.memory_mib);
    }

    /// Counts a VM that now exists on the host (until the next refresh observes it).
    pub(crate) fn add_used(&mut self, r: &Resources) {
        self.vcpus_used = self.vcpus_used.saturating_add(r.vcpus);
        self.memory_used = self.memory_used.saturating_add(r.memory_mib);
        self.vm_count = self.vm_count.saturating_add(1);
    }

    /// Stops counting a VM that is gone.
    pub(crate) fn remove_used(&mut self, r: &Resources) {
        self.vcpus_used = self.vcpus_used.saturating_sub(r.vcpus);
        self.memory_used = self.memory_used.saturating_sub(r.memory_mib);
        self.vm_count = self.vm_count.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(vcpus: u32, memory_mib: u64) -> Resources {
        Resources {
            vcpus,
            memory_mib,
            disk_gib: 1,
        }
    }

    fn host(vcpus: u32, memory: u64) -> Capacity {
        Capacity {
            vcpus_total: vcpus,
            memory_total: memory,
            ..Default::default()
        }
    }

    #[test]
    fn reservations_fill_a_host_and_are_released() {
        let mut h = host(4, 4096);
        h.reserve(&size(2, 2048)).unwrap();
        h.reserve(&size(2, 2048)).unwrap();
        assert_eq!(h.free(), (0, 0));
        let e = h.reserve(&size(1, 16)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        h.release(&size(2, 2048));
        assert_eq!(h.free(), (2, 2048));
        h.release(&size(8, 1 << 40));
        assert_eq!((h.vcpus_reserved, h.memory_reserved), (0, 0));
    }

    #[test]
    fn a_reservation_that_would_overflow_is_refused_not_wrapped() {
        // A host that reports the largest numbers there are, nearly all of it held already.
        let mut h = Capacity {
            vcpus_total: u32::MAX,
            memory_total: u64::MAX,
            vcpus_used: 0,
            memory_used: 0,
            vcpus_reserved: u32::MAX - 1,
            memory_reserved: u64::MAX - 1,
            vm_count: 0,
        };
        let before = h;
        for r in [size(2, 1), size(1, 2), size(u32::MAX, u64::MAX)] {
            let e = h.reserve(&r).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{r:?}");
            assert_eq!(h, before, "a refused reservation changes nothing");
        }
        h.reserve(&size(1, 1)).unwrap();
        assert_eq!(h.free(), (0, 0));
    }

    #[test]
    fn huge_used_counts_mean_full_never_free() {
        // What a wrapping sum would have turned into plenty of room.
        let h = Capacity {
            vcpus_total: 64,
            memory_total: 1 << 20,
            vcpus_used: u32::MAX,
            memory_used: u64::MAX,
            vcpus_reserved: u32::MAX,
            memory_reserved: u64::MAX,
            vm_count: usize::MAX,
        };
        assert_eq!(h.taken(), (u32::MAX, u64::MAX));
        assert_eq!(h.free(), (0, 0));
        assert!(!h.fits(&size(1, 16)));
        let mut h = h;
        h.add_used(&size(u32::MAX, u64::MAX));
        assert_eq!((h.vcpus_used, h.memory_used), (u32::MAX, u64::MAX));
        h.remove_used(&size(u32::MAX, u64::MAX));
        assert_eq!((h.vcpus_used, h.memory_used), (0, 0));
    }
}
