"""The dashboard's views, one module each, all thin :class:`~dashboard.views.base.StateView` classes
over one session's :class:`~dashboard.state.DashboardState`; ``base`` says how they draw."""
from dashboard.views.bpt import BPTDiagrams
from dashboard.views.compare import CompareView
from dashboard.views.discovery import DiscoveryBar
from dashboard.views.header import Header
from dashboard.views.histogram import ScoreHistogram
from dashboard.views.inspector import Inspector
from dashboard.views.labels import LabelPanel
from dashboard.views.latent_map import LatentMap
from dashboard.views.samp import SampButton
from dashboard.views.search import SearchBox
from dashboard.views.similar import SimilarGalaxies
from dashboard.views.table import ExportButton, SelectionTable
from dashboard.views.why import WhyOdd

__all__ = ["BPTDiagrams", "CompareView", "DiscoveryBar", "ExportButton", "Header", "Inspector", "LabelPanel",
           "LatentMap", "SampButton", "ScoreHistogram", "SearchBox", "SelectionTable", "SimilarGalaxies", "WhyOdd"]
