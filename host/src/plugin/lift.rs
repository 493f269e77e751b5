//! Values lifted out of a plugin's memory within the size of that memory.
//!
//! The canonical ABI lets the entries of a list point at the same bytes: a
//! reply of 1 000 headers whose values all point at one 1 MiB buffer takes
//! 1 MiB of the plugin's memory, and would take 1 GiB of the gateway's once
//! copied. wasmtime lifts a hook's result whole (and runs the plugin's
//! post-return, which frees it) before the host sees any of it, and a
//! host function's arguments before it is called, so the bound is part of
//! the lift: in a `Bounded` value, each list and string (`Counted`)
//! counts the bytes it spans in the plugin's memory against the size of
//! that memory before it is copied, and a value that would go past it fails
//! the lift (`Overdrawn`). A value without aliases is never refused: its
//! lists and strings lie apart in that memory, so they span at most all of
//! it. Used for a hook's decision (a fault of kind `reply`) and the facts of
//! `memoize-request`; `send` and `send-all` lift their lists lazily instead
//! (`caps::http`).

use std::cell::Cell;

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};
use wasmtime::{Result, ValRaw};

/// A complete answer a plugin gave instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// What a hook decided, as lifted: its lists and strings counted.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub(super) enum Decision {
    #[component(name = "continue")]
    Continue,
    #[component(name = "respond")]
    Respond(Lifted),
}

/// `reply` of the WIT world, as lifted.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct Lifted {
    status: u16,
    headers: Counted<Vec<Header>>,
    body: Counted<Vec<u8>>,
}

/// `header` of the WIT world (a name and a value), as lifted.
type Header = (Counted<String>, Counted<Vec<u8>>);

impl From<Lifted> for Reply {
    fn from(r: Lifted) -> Self {
        Self { status: r.status, headers: r.headers.0.into_iter().map(|(n, v)| (n.0, v.0)).collect(), body: r.body.0 }
    }
}

/// `request-fact` of the WIT world (`setup.memoize-request`), as lifted.
#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
pub(super) enum RequestFact {
    #[component(name = "method")]
    Method,
    #[component(name = "path")]
    Path,
    #[component(name = "query")]
    Query,
    #[component(name = "scheme")]
    Scheme,
    #[component(name = "authority")]
    Authority,
    #[component(name = "client-address")]
    ClientAddress,
    #[component(name = "header")]
    Header(Counted<String>),
    #[component(name = "path-param")]
    PathParam(Counted<String>),
    #[component(name = "context")]
    Context(Counted<String>),
}

/// A value lifted within the plugin's memory (see the module's doc).
pub(super) struct Bounded<T>(pub(super) T);

/// A lift spanned more bytes than the plugin's memory holds: its lists
/// share bytes.
#[derive(Debug)]
pub(super) struct Overdrawn;

impl std::fmt::Display for Overdrawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("lists and strings spanning more bytes than the plugin's memory (they share bytes)")
    }
}

impl std::error::Error for Overdrawn {}

thread_local! {
    /// What the value being lifted on this thread may still span. A lift
    /// runs on one thread without awaiting, and sets it for itself.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Lifts with a budget of `bytes`, restoring the one before.
fn within<T>(bytes: usize, lift: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = LEFT.replace(Some(bytes));
    let lifted = lift();
    LEFT.set(before);
    lifted
}

/// Charges `len` elements of `element` bytes each; outside [`within`],
/// nothing may be lifted.
fn charge(len: u32, element: usize) -> Result<()> {
    let bytes = usize::try_from(len).unwrap_or(usize::MAX).saturating_mul(element);
    match LEFT.get() {
        Some(left) if bytes <= left => {
            LEFT.set(Some(left - bytes));
            Ok(())
        }
        _ => Err(Overdrawn.into()),
    }
}

// SAFETY: every item is the inner value's own, so the layout and type
// checks are its own.
#[expect(unsafe_code, reason = "wasmtime's lifting traits are unsafe; a wrapper forwarding to the inner value's")]
unsafe impl<T: ComponentType> ComponentType for Bounded<T> {
    type Lower = T::Lower;
    const ABI: CanonicalAbiInfo = T::ABI;
    const MAY_REQUIRE_REALLOC: bool = T::MAY_REQUIRE_REALLOC;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> Result<()> {
        T::typecheck(ty, types)
    }
}

// SAFETY: lifts exactly as the inner value does.
#[expect(unsafe_code, reason = "wasmtime's lifting traits are unsafe; a wrapper forwarding to the inner value's")]
unsafe impl<T: Lift> Lift for Bounded<T> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> Result<Self> {
        within(cx.memory().len(), || T::linear_lift_from_flat(cx, ty, src)).map(Self)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> Result<Self> {
        within(cx.memory().len(), || T::linear_lift_from_memory(cx, ty, bytes)).map(Self)
    }
}

/// A list or string of a [`Bounded`] value, charged before it is copied.
#[derive(Debug)]
pub(super) struct Counted<T>(pub(super) T);

/// The bytes one element of a list takes in the plugin's memory.
pub(super) trait Spans {
    const ELEMENT: usize;
}

impl Spans for String {
    // UTF-8: its length is in bytes.
    const ELEMENT: usize = 1;
}

impl<T: ComponentType> Spans for Vec<T> {
    const ELEMENT: usize = T::SIZE32;
}

// SAFETY: every item is the inner list's own.
#[expect(unsafe_code, reason = "wasmtime's lifting traits are unsafe; a wrapper forwarding to the inner list's")]
unsafe impl<T: ComponentType<Lower = [ValRaw; 2]> + Spans> ComponentType for Counted<T> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = T::ABI;
    const MAY_REQUIRE_REALLOC: bool = T::MAY_REQUIRE_REALLOC;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> Result<()> {
        T::typecheck(ty, types)
    }
}

// SAFETY: lifts exactly as the inner list does, after reading its length
// (a list or string is a pointer and a length, flat or in memory).
#[expect(unsafe_code, reason = "wasmtime's lifting traits are unsafe; a wrapper forwarding to the inner list's")]
unsafe impl<T: Lift<Lower = [ValRaw; 2]> + Spans> Lift for Counted<T> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> Result<Self> {
        charge(src[1].get_u32(), T::ELEMENT)?;
        T::linear_lift_from_flat(cx, ty, src).map(Self)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> Result<Self> {
        let len = bytes.get(4..8).and_then(|b| b.try_into().ok()).map_or(u32::MAX, u32::from_le_bytes);
        charge(len, T::ELEMENT)?;
        T::linear_lift_from_memory(cx, ty, bytes).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_budget_and_end_with_their_lift() {
        let lifted = within(100, || {
            charge(60, 1)?;
            charge(5, 8)?;
            Ok(LEFT.get())
        });
        assert_eq!(lifted.ok().flatten(), Some(0));
        let over = within(100, || charge(26, 4));
        assert!(over.is_err_and(|e| e.is::<Overdrawn>()));
        // Outside a lift nothing is charged, and nothing may be lifted.
        assert_eq!(LEFT.get(), None);
        assert!(charge(0, 1).is_err());
        assert!(within(usize::MAX, || charge(u32::MAX, usize::MAX)).is_ok());
    }
}
