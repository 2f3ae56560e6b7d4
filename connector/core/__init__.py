"""The pure core: rule sets, formulas, the decision table, its proof, evaluation, forecast.

Nothing in here touches the network, files, the clock or the environment: time comes in as
`today`, records come in as dictionaries, and results go out as data.
"""
