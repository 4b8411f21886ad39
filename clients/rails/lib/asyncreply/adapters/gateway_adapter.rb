# frozen_string_literal: true

require "json"
require "net/http"

module Asyncreply
  module Adapters
    # The production adapter: speaks the gateway's handshake.
    #
    # A request is deferred only when the gateway forwarded it as a first
    # arrival (<tt>Asyncreply-Deferrable: 1</tt>); without a gateway in front
    # the action runs inline, so a deferral never reaches a client. The
    # gateway strips every Asyncreply-* header a client sends, which is what
    # makes them trustworthy: do not let clients reach the application past
    # the gateway with this adapter (use <tt>:inline</tt> there).
    #
    # Progress is POSTed to the URL the replay carries in
    # <tt>Asyncreply-Progress</tt>, waiting at most
    # Asyncreply.progress_timeout; errors are ignored.
    #
    #   Rails.application.config.asyncreply.adapter = :gateway
    class GatewayAdapter
      def defer(request, _deferral)
        request.headers[DEFERRABLE_HEADER] == "1"
      end

      def progress(request, percent, message)
        url = request.headers[PROGRESS_HEADER]
        return if url.blank?

        post_within(Asyncreply.progress_timeout, url, { percent: percent, message: message }.compact.to_json)
      end

      private
        # POSTs +body+ to +url+ from a thread of its own, so that neither a
        # slow name lookup nor a slow gateway can hold the action longer than
        # +timeout+: past it the report is abandoned, and the thread ends at
        # its own timeouts.
        def post_within(timeout, url, body)
          poster = Thread.new do
            uri = URI(url)
            if uri.is_a?(URI::HTTP)
              Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https",
                open_timeout: timeout, read_timeout: timeout, write_timeout: timeout) do |http|
                http.post(uri.request_uri, body, "Content-Type" => "application/json")
              end
            end
          rescue StandardError
            nil # progress is advisory: the replay goes on without it
          end
          poster.join(timeout)
          nil
        end
    end
  end
end
