defmodule HelloElixir.MixProject do
  use Mix.Project

  def project do
    [
      app: :hello_elixir,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [],
      releases: [
        hello_elixir: [include_erts: true]
      ]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :inets],
      mod: {HelloElixir.Application, []},
      env: [port: 8080]
    ]
  end
end
