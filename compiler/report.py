"""Reports: a compiled project's plan -> text summary, Markdown tables and PNG memory map (SPEC 10)."""

from __future__ import annotations


def print_summary(plan: dict) -> None:
    sram, flash = plan["sram_bytes"], plan["flash_bytes"]
    print(f"model {plan['model']} @ {plan['resolution']}px, {len(plan['layers'])} convs, "
          f"{plan['macs'] / 1e6:.1f} M MACs, {plan['classes']} classes")
    print(f"units: total {plan['total_units']:,}, budget {plan['budget_units']:,}")
    print("SRAM bytes: " + ", ".join(f"{k} {v:,}" for k, v in sram.items()))
    print("flash bytes: " + ", ".join(f"{k} {v:,}" for k, v in flash.items()))
