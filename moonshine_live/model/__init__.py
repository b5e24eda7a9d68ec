"""The Moonshine network (nn.Modules only), its decode step and its vocabulary."""
