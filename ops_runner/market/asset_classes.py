"""Asset classes of common US-listed ETFs: the peers against which a move counts as market-wide."""

from __future__ import annotations

from collections.abc import Mapping

# A crash is market-wide only within an asset class: on 2008-10-13 and 2020-03-16 equity ETFs
# moved 10-23% while bond ETFs barely moved. Real-estate ETFs (VNQ, IYR) trade as equities and
# fell with them, so they are equity here; cash-like T-bill funds sit with bonds.
EQUITY = "equity"
BOND = "bond"
COMMODITY = "commodity"
UNCLASSIFIED = "unclassified"  # symbols nobody classified are peers of one another

_TICKERS = {
    EQUITY: """
        SPY IVV VOO VTI ITOT SCHB SCHX QQQ QQQM DIA RSP IWM IWB IWV IWF IWD IWN IWO IJH IJR MDY
        VB VO VV VUG VTV VBR VBK MTUM QUAL USMV SPLV XLK XLF XLE XLV XLI XLY XLP XLU XLB XLC SMH
        EFA VEA IEFA VEU VXUS ACWI ACWX VT SCZ VSS IEV VGK EZU EWJ EWG EWU EWC EWA EWZ EWY EWT
        FXI MCHI INDA EEM VWO IEMG
        VNQ IYR SCHH RWR XLRE ICF USRT VNQI RWX
    """,
    BOND: """
        AGG BND IUSB SCHZ IEF IEI TLT SHY VGSH VGIT VGLT GOVT EDV ZROZ SPTL TIP SCHP VTIP STIP
        LQD VCIT VCSH VCLT IGSB HYG JNK SHYG USHY MUB EMB BNDX BWX IGOV MBB VMBS
        BIL SHV SGOV GBIL MINT NEAR
    """,
    COMMODITY: "GLD IAU GLDM SGOL SLV DBC GSG PDBC DBA DBB USO UNG CPER",
}

DEFAULT_ASSET_CLASSES: Mapping[str, str] = {
    ticker: name for name, tickers in _TICKERS.items() for ticker in tickers.split()
}


def compute_asset_class(symbol: str, overrides: Mapping[str, str] | None = None) -> str:
    """Return the asset class of ``symbol``: the override, else the default table, else
    ``unclassified``."""
    if overrides and symbol in overrides:
        return overrides[symbol]
    return DEFAULT_ASSET_CLASSES.get(symbol, UNCLASSIFIED)
