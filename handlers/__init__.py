"""Pure event handlers: `handle(event, deps)`. They never read os.environ; the composition root
(vastdrop.compose) builds their dependencies. They never import torch or av."""
