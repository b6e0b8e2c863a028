"""trady: ahead-of-time compiler for bit-exact int8 inference and on-device training (TraDy) on Cortex-M.

Pipeline, one module per stage (see README.md in this folder):
importers/ -> ir -> quant -> costs -> planner -> emit -> pipeline (compile) -> cli.
"""

__version__ = "0.1.0"
