defmodule HelloElixir.Web do
  @moduledoc "inets httpd callback: GET / names the app and the node's host."
  require Record

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  # `do` is a reserved word in Elixir, hence unquote/1 to name the callback.
  def unquote(:do)(mod(method: ~c"GET", request_uri: ~c"/")) do
    {:ok, host} = :inet.gethostname()

    body =
      "hello from hello_elixir on #{host} " <>
        "(node #{node()}, otp #{:erlang.system_info(:otp_release)})\n"

    reply(200, body)
  end

  def unquote(:do)(mod()), do: reply(404, "not found\n")

  defp reply(code, body) do
    head = [
      code: code,
      content_type: ~c"text/plain",
      content_length: Integer.to_charlist(byte_size(body))
    ]

    {:break, [response: {:response, head, [body]}]}
  end
end
