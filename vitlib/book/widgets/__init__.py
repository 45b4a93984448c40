"""ipywidgets front-ends over :mod:`vitlib.bench` and :mod:`vitlib.book.studies`, and the plots they draw.

One module per chapter's study. Each widget's plot is an ordinary function too, so a chapter can
draw the default setting as a static figure that the HTML book shows without a kernel. Models come
from the presets by name (:mod:`vitlib.models.presets`) and are asked for their input and parts.
"""
from .anatomy import COMPONENT_COLOURS, flops_explorer, flops_split_chart, meta_breakdown, plot_flops_breakdown
from .attention import kernel_chart, kernel_explorer, plot_kernel_sweep
from .deployment import plot_int8_grid, plot_serving, serving_chart, serving_explorer
from .distillation import distillation_explorer, plot_condition_curves, plot_temperature_alpha, temperature_alpha_chart
from .lightweight import (knob_chart, plot_against_base, plot_knobs, plot_posemb_similarity, plot_seed_curves,
                          sizing_explorer)
from .navit import dropout_chart, plot_dropout_sweep, plot_training_curves, token_dropout_explorer
from .scaling import allreduce_explorer, plot_allreduce_sweep
from .stages import crossvit_explorer, levit_parts_chart, levit_stage_explorer, meta_parts, plot_parts

__all__ = ["COMPONENT_COLOURS", "meta_breakdown", "plot_flops_breakdown", "flops_explorer", "flops_split_chart",
           "knob_chart", "plot_against_base", "plot_knobs", "plot_posemb_similarity", "plot_seed_curves", "sizing_explorer",
           "meta_parts", "plot_parts", "levit_parts_chart", "levit_stage_explorer",
           "crossvit_explorer", "dropout_chart", "plot_dropout_sweep", "token_dropout_explorer", "plot_training_curves",
           "plot_allreduce_sweep", "allreduce_explorer", "plot_condition_curves", "plot_temperature_alpha",
           "distillation_explorer", "temperature_alpha_chart",
           "kernel_chart", "kernel_explorer", "plot_kernel_sweep",
           "plot_int8_grid", "plot_serving", "serving_chart", "serving_explorer"]
