"""transferjax: transferability metrics in JAX — which pre-trained model will fine-tune best?

Each metric scores one model from its features on a labelled target set (higher is better);
:func:`score_hub` scores many models of different widths in one vmapped call.
"""

from . import evaluation as evaluation
from .evaluation import evaluate as evaluate
from .evaluation import kendall_tau as kendall_tau
from .evaluation import pearson as pearson
from .evaluation import top_k_relative_accuracy as top_k_relative_accuracy
from .evaluation import weighted_kendall_tau as weighted_kendall_tau
from .hub import aggregate_layers as aggregate_layers
from .hub import best_layers as best_layers
from .hub import pad_features as pad_features
from .hub import plan_buckets as plan_buckets
from .hub import reduce_dim as reduce_dim
from .hub import score_hub as score_hub
from .metrics.disco import disco as disco
from .metrics.etran import etran_terms as etran_terms
from .metrics.gbc import gbc as gbc
from .metrics.hscore import hscore as hscore
from .metrics.hscore import shrinkage_hscore as shrinkage_hscore
from .metrics.knn import knn as knn
from .metrics.leep import leep as leep
from .metrics.logme import logme as logme
from .metrics.nce import nce as nce
from .metrics.ncti import ncti_terms as ncti_terms
from .metrics.nleep import nleep as nleep
from .metrics.parc import parc as parc
from .metrics.pactran import pactran as pactran
from .metrics.pactran import pactran_dirichlet as pactran_dirichlet
from .metrics.ped import PEDResult as PEDResult
from .metrics.ped import ped as ped
from .metrics.ped import ped_logme as ped_logme
from .metrics.ped import ped_score as ped_score
from .metrics.ped import ped_sfda as ped_sfda
from .metrics.rankme import alpha_req as alpha_req
from .metrics.rankme import alpha_req_exponent as alpha_req_exponent
from .metrics.rankme import rankme as rankme
from .metrics.rankme import rankme_and_alpha as rankme_and_alpha
from .metrics.sfda import SFDAEnsemble as SFDAEnsemble
from .metrics.sfda import sfda as sfda
from .metrics.sfda import sfda_ensemble as sfda_ensemble
from .metrics.tta import TTABound as TTABound
from .metrics.tta import TTAOptimizeResult as TTAOptimizeResult
from .metrics.tta import TTASettings as TTASettings
from .metrics.tta import tta as tta
from .metrics.tta import tta_bound as tta_bound
from .metrics.transrate import transrate as transrate
from .metrics.tta import tta_optimize as tta_optimize
from .registry import MetricInfo as MetricInfo
from .registry import get_metric as get_metric
from .registry import metric_names as metric_names
from . import streaming as streaming
from .stats import FeatureStats as FeatureStats
from .stats import LabelTable as LabelTable
from .stats import feature_stats as feature_stats
from .stats import merge_label_tables as merge_label_tables
from .stats import merge_stats as merge_stats
from .streaming import sharded_stats as sharded_stats
from .streaming import stream_label_table as stream_label_table
from .streaming import stream_stats as stream_stats

__version__ = "0.1.0"


def __getattr__(name):
    # `tj.features` (flax extraction, zoo, datasets) is an edge: imported on first access only,
    # so `import transferjax` does not import flax.
    if name == "features":
        import importlib

        return importlib.import_module(".features", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FeatureStats",
    "LabelTable",
    "aggregate_layers",
    "best_layers",
    "MetricInfo",
    "PEDResult",
    "SFDAEnsemble",
    "TTABound",
    "TTAOptimizeResult",
    "TTASettings",
    "alpha_req",
    "alpha_req_exponent",
    "disco",
    "etran_terms",
    "evaluate",
    "evaluation",
    "feature_stats",
    "gbc",
    "get_metric",
    "kendall_tau",
    "hscore",
    "knn",
    "leep",
    "logme",
    "nce",
    "ncti_terms",
    "nleep",
    "parc",
    "pactran",
    "pactran_dirichlet",
    "shrinkage_hscore",
    "merge_label_tables",
    "merge_stats",
    "metric_names",
    "pad_features",
    "ped",
    "ped_logme",
    "ped_score",
    "ped_sfda",
    "rankme",
    "rankme_and_alpha",
    "pearson",
    "plan_buckets",
    "reduce_dim",
    "score_hub",
    "sfda",
    "sfda_ensemble",
    "sharded_stats",
    "stream_label_table",
    "stream_stats",
    "streaming",
    "top_k_relative_accuracy",
    "transrate",
    "tta",
    "tta_bound",
    "tta_optimize",
    "weighted_kendall_tau",
]
