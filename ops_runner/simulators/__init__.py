"""The simulators the demo ships with, and the tests use: each speaks a real protocol or format.

The loopback TWS API simulator (``tws_sim``, with its account, codec and order book), the
IB Flex Web Service and HTTP data-vendor servers (``flex_server``, ``vendor_server``,
``vendor_feed``, on ``loopback``), the market the simulated broker trades (``market``), and the
simulated histories of many cycles (``history``)."""
