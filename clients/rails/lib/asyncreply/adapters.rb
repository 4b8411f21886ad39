# frozen_string_literal: true

module Asyncreply
  # What a deferral does, chosen per environment as Active Job's queue
  # adapters are (<tt>config.asyncreply.adapter = :gateway</tt>):
  #
  # * <tt>:gateway</tt> (production): defers through the gateway's handshake
  #   when the gateway forwarded the request as deferrable; without a gateway
  #   in front, the action runs inline.
  # * <tt>:inline</tt> (development): never defers; the action simply runs,
  #   same code, same URLs.
  # * <tt>:test</tt> (tests): records every deferral and answers it as the
  #   application would answer the gateway; Asyncreply::TestHelper replays
  #   the recorded requests.
  #
  # An adapter is any object with two methods:
  #
  # [<tt>defer(request, deferral)</tt>]
  #   Whether to answer +request+, a first arrival, with the deferral
  #   (an Asyncreply::Deferral) instead of running the action.
  # [<tt>progress(request, percent, message)</tt>]
  #   Reports how far the replay +request+ has got: +percent+ an Integer
  #   from 0 to 100, +message+ a String or nil. It must return quickly and
  #   never raise: progress is advisory.
  module Adapters
    extend ActiveSupport::Autoload

    autoload :GatewayAdapter
    autoload :InlineAdapter
    autoload :TestAdapter

    # The adapter class for a name: <tt>lookup(:test)</tt> is TestAdapter.
    def self.lookup(name)
      class_name = "#{name.to_s.camelize}Adapter"
      unless const_defined?(class_name, false)
        raise ArgumentError, "no asyncreply adapter named #{name.inspect}: use :gateway, :inline or :test"
      end

      const_get(class_name, false)
    end
  end
end
